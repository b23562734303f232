"""Property-based tests (Hypothesis) of the decoder and canonicaliser: whatever bytes or JSON a
stranger sends, the only exception is our InputError, and nothing hangs (a per-example deadline)."""
from __future__ import annotations

import io
import json
import struct
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from handlers.errors import InputError
from handlers.image_decoding import open_image
from handlers.npy_decoding import npy_to_arrays
from handlers.request_decoding import request_to_sources
from model_defs.preprocessing import canonicalize
from settings.limits import LIMITS

PROPERTY = settings(max_examples=150, deadline=timedelta(seconds=2),
                    suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def decode_all_the_way(data: bytes, content_type: str = "image/png") -> None:
    """The handler's path for one request, minus the model."""
    sources, _ = request_to_sources({"body": data}, content_type, LIMITS)
    for source in sources:
        image = source if isinstance(source, np.ndarray) else open_image(source, LIMITS)
        out = canonicalize(image, "digit", (32, 32))
        assert out.shape == (32, 32) and out.dtype == np.uint8


def only_input_errors(data: bytes, content_type: str = "image/png") -> None:
    try:
        decode_all_the_way(data, content_type)
    except InputError as err:
        assert 400 <= err.status < 500 and err.code and len(err.message) > 10


def seed_images() -> list[bytes]:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (24, 18), dtype=np.uint8)
    out = []
    for fmt, mode, params in (("PNG", "L", {}), ("PNG", "RGBA", {}), ("JPEG", "RGB", {"quality": 90}),
                              ("JPEG", "RGB", {"progressive": True}), ("GIF", "L", {}), ("BMP", "RGB", {}),
                              ("WEBP", "RGB", {}), ("TIFF", "L", {"compression": "tiff_lzw"})):
        buf = io.BytesIO()
        Image.fromarray(pixels).convert(mode).save(buf, format=fmt, **params)
        out.append(buf.getvalue())
    return out


SEEDS = seed_images()


def test_seed_images_decode():
    for data in SEEDS:
        decode_all_the_way(data)


@PROPERTY
@given(st.binary(max_size=4096))
def test_random_bytes(data):
    only_input_errors(data)


@PROPERTY
@given(st.sampled_from(SEEDS), st.data())
def test_mutated_real_images(seed, data):
    """Flip, overwrite, insert and truncate bytes of real images in every format."""
    buf = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 8))):
        kind = data.draw(st.sampled_from(["flip", "set", "insert", "truncate"]))
        pos = data.draw(st.integers(0, max(0, len(buf) - 1)))
        if kind == "flip" and buf:
            buf[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set" and buf:
            buf[pos] = data.draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80]))
        elif kind == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        else:
            del buf[pos:]
    only_input_errors(bytes(buf))


@PROPERTY
@given(st.sampled_from(SEEDS), st.integers(0, 64))
def test_headers_keep_their_magic_but_lie(seed, cut):
    """A valid signature followed by garbage: a corrupt image, never a crash."""
    only_input_errors(seed[:cut] + b"\xff" * 32)


# Numbers as JSON really carries them: any size (Python's json reads integers of any length, a
# float overflows to inf), so np.asarray and float() must never be trusted with them.
numbers = (st.integers() | st.integers(-10**400, 10**400) | st.floats(allow_nan=True, allow_infinity=True)
           | st.floats(-2, 300))

json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.text(max_size=20),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(
        st.sampled_from(["image", "pixels", "range", "instances", "b64", "x"]), children, max_size=4),
    max_leaves=40,
)


@PROPERTY
@given(json_values)
def test_arbitrary_json_documents(document):
    only_input_errors(json.dumps(document).encode(), "application/json")


rectangles = st.integers(1, 12).flatmap(
    lambda width: st.lists(st.lists(numbers, min_size=width, max_size=width), min_size=1, max_size=12))


@PROPERTY
@given(rectangles | st.lists(st.lists(numbers, min_size=1, max_size=12), min_size=1, max_size=12),
       st.sampled_from([None, "0-1", "0-255", "percent"]))
def test_pixel_arrays(rows, value_range):
    document = {"pixels": rows}
    if value_range:
        document["range"] = value_range
    only_input_errors(json.dumps(document).encode(), "application/json")


@PROPERTY
@given(st.integers(1, 64), st.integers(1, 64), st.sampled_from(["digit", "fashion"]), st.integers(0, 2**32 - 1))
def test_canonicalize_any_array(height, width, kind, seed):
    """Any grayscale picture canonicalises to the model size, and doing it twice changes nothing."""
    image = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    size = (32, 32) if kind == "digit" else (28, 28)
    once = canonicalize(image, kind, size)
    assert once.shape == size and once.dtype == np.uint8
    assert (canonicalize(once, kind, size) == once).all()


@st.composite
def number_literals(draw) -> str:
    """JSON number text of any length, past what json.dumps may write (Python refuses to turn an
    integer of more than 4,300 digits into text, and to parse one)."""
    digits = draw(st.integers(1, 6000))
    text = draw(st.sampled_from(["", "-"])) + draw(st.sampled_from("123456789")) + "0" * (digits - 1)
    if draw(st.booleans()):
        text += "." + "5" * draw(st.integers(1, 400))
    if draw(st.booleans()):
        text += f"e{draw(st.integers(-999, 999))}"
    return text


@PROPERTY
@given(number_literals(), st.sampled_from(['{"pixels": [[%s, 0]]}', '{"pixels": [[0], [%s]], "range": "0-1"}',
                                           '{"instances": [{"pixels": [[%s]]}]}', '{"image": %s}']),
       st.sampled_from(["application/json", "text/plain"]))
def test_numbers_of_any_size(literal, template, content_type):
    only_input_errors((template % literal).encode(), content_type)


@pytest.mark.parametrize("body, code", [
    (b'{"pixels": [[1' + b"0" * 400 + b", 0]]}", "bad_pixels"),          # past float: OverflowError
    (b'{"pixels": [[-1' + b"0" * 400 + b", 0]]}", "bad_pixels"),
    (b'{"pixels": [[1e400, 0]]}', "bad_pixels"),                          # float overflow: inf
    (b'{"pixels": [[1' + b"0" * 5000 + b", 0]]}", "malformed_json"),      # past int parsing's limit
])
def test_huge_numbers_are_client_errors(body, code):
    with pytest.raises(InputError) as err:
        decode_all_the_way(body, "application/json")
    assert err.value.code == code and 400 <= err.value.status < 500
    assert "sys.set_int_max_str_digits" not in err.value.message


# ---- colour modes ------------------------------------------------------------------------------
def tiff_in_mode(mode: str) -> bytes:
    gray = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 16), dtype=np.uint8))
    image = Image.merge("LAB", [gray] * 3) if mode == "LAB" else gray.convert(mode)
    buf = io.BytesIO()
    image.save(buf, format="TIFF")
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "I;16", "F"])
def test_tiff_in_every_convertible_mode_decodes(mode):
    decode_all_the_way(tiff_in_mode(mode), "image/tiff")


def test_tiff_in_cielab_is_415_unsupported_format():
    data = tiff_in_mode("LAB")
    assert Image.open(io.BytesIO(data)).mode == "LAB"  # valid; PIL reads it but cannot make it grey
    with pytest.raises(InputError) as err:
        decode_all_the_way(data, "image/tiff")
    assert (err.value.status, err.value.code) == (415, "unsupported_format")
    assert "LAB" in err.value.message and "RGB" in err.value.message


# ---- every JSON value, every .npy header: a 4xx or images, nothing else --------------------------
QUICK = settings(max_examples=200, deadline=timedelta(seconds=1),
                 suppress_health_check=[HealthCheck.too_slow], derandomize=True)

strings = st.text(max_size=24) | st.sampled_from(["\ud800", "data:image/png;base64,", "0-1", "0-255", ""])
any_json = st.recursive(
    st.none() | st.booleans() | numbers | strings,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(
        st.sampled_from(["image", "pixels", "range", "instances", "b64"]) | st.text(max_size=8), children,
        max_size=4),
    max_leaves=30,
)


def sources_or_input_error(row: dict, content_type: str) -> None:
    """request_to_sources, the function the handler calls on each request, then each source as the
    handler opens it: images, or an InputError with a 4xx status; no other exception."""
    try:
        sources, _ = request_to_sources(row, content_type, LIMITS)
        for source in sources:
            assert isinstance(source, (bytes, np.ndarray))
            if isinstance(source, bytes):
                open_image(source, LIMITS)
    except InputError as err:
        assert 400 <= err.status < 500 and err.code and len(err.message) > 10


@QUICK
@given(any_json, st.sampled_from(["application/json", "text/json", "application/json; charset=utf-8",
                                  "text/plain", None]))
def test_any_json_value_torchserve_parsed(document, content_type):
    """What TorchServe hands the handler when its worker parses JSON itself (decode_input_request=true,
    its default): null, numbers, strings, lists, objects at the top or anywhere."""
    sources_or_input_error({"body": document}, content_type)


@QUICK
@given(any_json)
def test_any_json_value_as_the_body(document):
    """The same values as the raw body the handler parses (decode_input_request=false, ours)."""
    raw = json.dumps(document).encode("utf-8", "surrogatepass")
    sources_or_input_error({"body": raw}, "application/json")


@pytest.mark.parametrize("body", [b"null", b"1.5", b"-1", b"true", b'"abc"', b'"\\ud800"', b"100000000000000",
                                  b"[null]", b'{"instances": [null, 1]}', b'{"instances": null}'])
@pytest.mark.parametrize("parsed", [False, True])
def test_json_values_we_do_not_take_are_4xx_never_500(body, parsed):
    value = json.loads(body) if parsed else body
    with pytest.raises(InputError) as err:
        request_to_sources({"body": value}, "application/json", LIMITS)
    assert 400 <= err.value.status < 500


# .npy headers: Python literals of any kind where numpy expects descr, fortran_order and shape
literals = st.recursive(
    st.none() | st.booleans() | st.integers(-2, 70) | st.integers() | st.floats(allow_nan=False)
    | st.sampled_from(["|u1", "<f4", ">f8", "<i4", "|b1", "<f2", "O", "V8", "S3", "<U2", "u1", "", "(", "f4,f4"])
    | st.text(max_size=6),
    lambda children: st.lists(children, max_size=4).map(tuple) | st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=4), children, max_size=2),
    max_leaves=12,
)
shapes = (st.lists(st.integers(0, 40), min_size=1, max_size=4).map(tuple)
          | st.lists(st.integers() | st.booleans() | st.floats(allow_nan=False) | st.none() | st.text(max_size=3),
                     max_size=4).map(tuple)
          | literals)


@st.composite
def npy_files(draw) -> bytes:
    header = {"descr": draw(st.sampled_from(["|u1", "<f4", "<f8"]) | literals),
              "fortran_order": draw(st.booleans() | literals), "shape": draw(shapes)}
    for key in draw(st.lists(st.sampled_from(["descr", "fortran_order", "shape"]), max_size=1)):
        del header[key]
    if draw(st.booleans()):
        header[draw(st.text(max_size=4))] = draw(literals)
    text = draw(st.sampled_from([repr(header), repr(header).replace("{", "{ ", 1), repr(header)[:-1]]))
    encoded = text.encode("latin1", "replace") + b"\n"
    version = draw(st.sampled_from([1, 1, 2, 3, 0]))
    length = struct.pack("<H" if version == 1 else "<I", len(encoded))
    try:  # data of exactly the declared size, when the header is one numpy can size
        needed = int(np.prod(header["shape"])) * np.dtype(header["descr"]).itemsize
    except Exception:  # noqa: BLE001 - not a header numpy can size: any data
        needed = -1
    data = bytes(needed) if 0 <= needed <= 200_000 and draw(st.booleans()) else draw(st.binary(max_size=512))
    return b"\x93NUMPY" + bytes([version, 0]) + length + encoded + data


@QUICK
@given(npy_files())
def test_any_npy_header(data):
    try:
        arrays, _ = npy_to_arrays(data, LIMITS)
        assert all(a.dtype == np.uint8 and a.ndim == 2 for a in arrays)
    except InputError as err:
        assert 400 <= err.status < 500 and err.code and len(err.message) < 1000


@QUICK
@given(st.binary(max_size=600))
def test_any_bytes_after_the_npy_magic(tail):
    try:
        npy_to_arrays(b"\x93NUMPY" + tail, LIMITS)
    except InputError as err:
        assert 400 <= err.status < 500


@pytest.mark.parametrize("shape", ["(2.5, 28)", "('28', 28)", "(None, 28)", "((1, 2), 28)", "(True, 28, 28)",
                                   "(10**30, 28)", "(1000000000000000000000, 28, 28)", "(28, False)", "()"])
def test_npy_shapes_that_are_not_whole_numbers_are_4xx(shape):
    header = ("{'descr': '|u1', 'fortran_order': False, 'shape': %s, }" % shape).encode() + b"\n"
    data = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(28 * 28)
    with pytest.raises(InputError) as err:
        npy_to_arrays(data, LIMITS)
    assert 400 <= err.value.status < 500
