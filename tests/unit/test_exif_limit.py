"""EXIF is part of the decode budget: ImageOps.exif_transpose reads a picture's whole EXIF into Python
values and writes it back (about 1 s of CPU per MB of number arrays; a 7 MB one held a worker 7-13 s),
so a picture carrying more than max_exif_bytes (64 KiB, what one JPEG APP1 segment holds) of EXIF, in
any place Pillow takes it from, is refused with 413 exif_too_large before anything parses it
(handlers/image_structure.py). Photos with ordinary EXIF are still turned upright.
"""
from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from handlers.errors import InputError
from handlers.image_decoding import open_header, open_image
from handlers.image_structure import EXIF_CODE, check_read_metadata, check_structure
from reliability import crafted
from settings.limits import LIMITS

PNG = {"Content-Type": "image/png"}
BIG = 2_000_000  # bytes of EXIF in the crafted files below: about 2 s of exif_transpose
# A refusal from the framing costs microseconds (<= 0.003 s seen); decoding the 2 MB EXIF costs ~2 s.
REFUSED_CPU_S = 0.1


def png_text_exif(kind: bytes, keyword: bytes, blob: bytes, compressed: bool = True) -> bytes:
    """A 28 x 28 PNG whose EXIF is in a text chunk: raw under the keyword "exif", ImageMagick's hex
    under "Raw profile type exif"."""
    text = blob if keyword == b"exif" else f"\nexif\n{len(blob):8}\n{blob.hex()}\n".encode()
    if kind == b"tEXt":
        payload = keyword + b"\0" + text
    elif kind == b"zTXt":
        payload = keyword + b"\0\0" + zlib.compress(text, 9)
    else:  # iTXt: keyword, compression flag and method, language, translated keyword
        payload = keyword + b"\0" + (b"\1\0" if compressed else b"\0\0") + b"\0\0" + (
            zlib.compress(text, 9) if compressed else text)
    head, tail = crafted._small_png_chunks()
    return head + crafted._png_chunk(kind, payload) + tail


def png_exif_after_image_data(size: int) -> bytes:
    """The eXIf chunk after IDAT: Pillow reads it only when the pixels load."""
    head, tail = crafted._small_png_chunks()
    iend = crafted._png_chunk(b"IEND", b"")
    return head + tail[:-len(iend)] + crafted._png_chunk(b"eXIf", crafted.exif_blob(size)) + iend


def tiff_gps_ifd(size: int) -> bytes:
    """tiff_exif_ifd with the array in the GPS IFD instead of the Exif IFD."""
    data = bytearray(crafted.tiff_exif_ifd(size))
    at = data.index(struct.pack("<HHI", 0x8769, 4, 1))
    data[at:at + 2] = struct.pack("<H", 0x8825)
    return bytes(data)


def tiff_interop_ifd(size: int) -> bytes:
    """A TIFF whose Exif IFD points on to an Interop IFD holding the array (Pillow follows it when the
    first IFD names the Interop tag too: here in place of the orientation)."""
    data = bytearray(crafted.tiff_exif_ifd(size))
    at = data.index(struct.pack("<HHI", 0x0112, 3, 1))
    data[at:at + 2] = struct.pack("<H", 0xA005)
    exif_at = struct.unpack_from("<I", data, data.index(struct.pack("<HHI", 0x8769, 4, 1)) + 8)[0]
    count, array_at = struct.unpack_from("<II", data, exif_at + 2 + 4)
    # the Exif IFD's one entry becomes the Interop pointer; the Interop IFD sits where the array began
    interop = struct.pack("<H", 1) + struct.pack("<HHII", 0x0002, 5, count - 3, array_at + 24) + bytes(4)
    data[exif_at + 2:exif_at + 14] = struct.pack("<HHII", 0xA005, 4, 1, array_at)
    data[array_at:array_at + len(interop)] = interop
    return bytes(data)


BOMBS = {
    "PNG eXIf": lambda: crafted.png_exif(BIG),
    "PNG eXIf after IDAT": lambda: png_exif_after_image_data(BIG),
    "PNG tEXt exif": lambda: png_text_exif(b"tEXt", b"exif", b"Exif\0\0" + crafted.exif_blob(BIG)),
    "PNG tEXt raw profile": lambda: png_text_exif(b"tEXt", b"Raw profile type exif", crafted.exif_blob(BIG)),
    "PNG zTXt raw profile": lambda: crafted.png_ztxt_exif_profile(450_000),
    "PNG iTXt raw profile": lambda: png_text_exif(b"iTXt", b"Raw profile type exif", crafted.exif_blob(450_000)),
    "PNG iTXt raw profile, plain": lambda: png_text_exif(b"iTXt", b"Raw profile type exif",
                                                         crafted.exif_blob(BIG), compressed=False),
    "JPEG APP1 segments": lambda: crafted.jpeg_exif_segments(BIG),
    "TIFF Exif IFD": lambda: crafted.tiff_exif_ifd(BIG),
    "TIFF GPS IFD": lambda: tiff_gps_ifd(BIG),
    "TIFF Interop IFD": lambda: tiff_interop_ifd(BIG),
}


def refused_by(check, *args) -> InputError:
    started = time.process_time()
    with pytest.raises(InputError) as caught:
        check(*args)
    assert time.process_time() - started < REFUSED_CPU_S
    err = caught.value
    assert (err.status, err.code) == (413, EXIF_CODE), err.message
    assert f"{LIMITS.max_exif_bytes:,}" in err.message and "Strip the metadata" in err.message
    return err


@pytest.mark.parametrize("where", list(BOMBS))
def test_the_structure_check_refuses_oversized_exif_before_pillow_sees_it(where):
    refused_by(check_structure, BOMBS[where](), LIMITS)


@pytest.mark.parametrize("where", list(BOMBS))
def test_decoding_refuses_oversized_exif_fast(where):
    refused_by(open_image, BOMBS[where](), LIMITS)


def test_a_webp_exif_chunk_is_refused_as_read_with_the_header():
    """libwebp reads a WebP's chunks in C at Image.open and hands the EXIF chunk over unparsed."""
    data = crafted.webp_exif(BIG)
    check_structure(data, LIMITS)  # no WebP walker: the header read is where its EXIF is measured
    image = Image.open(io.BytesIO(data))
    assert len(image.info["exif"]) > BIG - 64
    refused_by(check_read_metadata, image, LIMITS)
    refused_by(open_header, data, LIMITS)
    refused_by(open_image, data, LIMITS)


def test_what_pillow_did_before_costs_seconds(monkeypatch):
    """The cost behind the limit: 1 MB of EXIF decoded as the handler did before (~1 s here)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # raw_decode switches the guard off
    started = time.process_time()
    image = crafted.raw_decode(crafted.png_exif(BIG // 2))
    assert image.size == (28, 28)
    assert time.process_time() - started > 4 * REFUSED_CPU_S


@pytest.mark.parametrize("make", [
    lambda: crafted.png_exif(LIMITS.max_exif_bytes, nested=True),   # Pillow unpacks it four times: ~0.2 s
    lambda: crafted.webp_exif(LIMITS.max_exif_bytes),
    lambda: crafted.jpeg_exif_segments(65_000),                      # one full APP1 segment
    lambda: crafted.tiff_exif_ifd(LIMITS.max_exif_bytes - 18),      # the Exif IFD's entry and its array
    lambda: png_text_exif(b"zTXt", b"Raw profile type exif", crafted.exif_blob(LIMITS.max_exif_bytes - 16)),
], ids=["png", "webp", "jpeg", "tiff", "png-ztxt-profile"])
def test_exif_up_to_the_limit_is_decoded_and_applied(make):
    image = open_image(make(), LIMITS)
    assert image.size == (28, 28)  # orientation 6 on a square: turned, same size


def test_one_byte_over_the_limit_is_refused():
    at_limit = crafted.png_exif(LIMITS.max_exif_bytes)
    size = struct.unpack_from(">I", at_limit, 33)[0]  # the eXIf chunk follows IHDR
    assert size <= LIMITS.max_exif_bytes
    check_structure(at_limit, LIMITS)
    head, tail = crafted._small_png_chunks()
    over = head + crafted._png_chunk(b"eXIf", crafted.exif_blob(size) + bytes(LIMITS.max_exif_bytes - size + 1)) + tail
    refused_by(check_structure, over, LIMITS)


# ---- ordinary photos: still turned upright ------------------------------------------------------
def stored_rotated(fmt: str, orientation: int = 6, padding: int = 0, **params) -> tuple[bytes, np.ndarray]:
    """A 40 x 24 picture saved sideways with an orientation tag (and `padding` bytes of a camera's
    maker notes), and how it should look upright."""
    rng = np.random.default_rng(3)
    stored = rng.integers(0, 256, (24, 40), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Camera Maker"
    if padding:
        exif.get_ifd(0x8769)[0x927C] = bytes(padding)  # MakerNote, UNDEFINED
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, format=fmt, exif=exif.tobytes(), **params)
    upright = Image.fromarray(stored).transpose(Image.Transpose.ROTATE_270)
    return buf.getvalue(), np.asarray(upright)


@pytest.mark.parametrize("fmt, params", [("PNG", {}), ("WEBP", {"lossless": True}), ("TIFF", {}),
                                         ("JPEG", {"quality": 100, "subsampling": 0})])
@pytest.mark.parametrize("padding", [0, 30_000])
def test_a_photo_with_orientation_exif_is_still_turned_upright(fmt, params, padding):
    data, upright = stored_rotated(fmt, padding=padding, **params)
    image = open_image(data, LIMITS)
    assert image.size == (24, 40)
    got = np.asarray(image.convert("L"), dtype=np.int16)
    assert np.abs(got - upright).mean() < (4 if fmt == "JPEG" else 0.5)


def test_the_handler_refuses_an_exif_bomb_with_its_own_4xx_fast(loaded):
    """The whole path a request takes in the worker: 413 exif_too_large JSON, in milliseconds."""
    handler = loaded("lenet5")
    for data in (crafted.png_exif(7_000_000), crafted.webp_exif(7_000_000)):
        started = time.process_time()
        status, body = handler.one({"body": data}, PNG)
        assert time.process_time() - started < REFUSED_CPU_S
        assert (status, body["error"]) == (413, EXIF_CODE), body
    data, _ = stored_rotated("PNG", padding=30_000)
    status, body = handler.one({"body": data}, PNG)
    assert status == 200, body
