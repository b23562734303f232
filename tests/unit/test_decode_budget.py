"""Decode budget: no image of legal size and byte count costs a worker more than ~0.5 s
of CPU to decode, whatever its structure. Each crafted worst case of reliability/crafted.py (made
here, not committed) is refused from its framing with a 4xx JSON, or decodes within the budget.
Figures (before and after) are in RELIABILITY.md; `python -m reliability.crafted [--raw]` prints them.
"""
from __future__ import annotations

import io
import struct
import time
import zlib

import pytest
from PIL import Image

from handlers.errors import InputError
from handlers.image_decoding import jpeg_draft_scale, open_image
from reliability import crafted
from settings.limits import LIMITS

BUDGET_CPU_S = 0.5
# What each crafted file must get: a 4xx code, or None (within every limit: decoded within budget).
EXPECTED = {
    "jpeg_1000px_20000_scans": "too_complex",
    "jpeg_4000px_20000_scans": "too_complex",
    "jpeg_2000000_com_segments": "too_complex",
    "jpeg_largest_baseline_noise": None,
    "png_500000_idat_chunks": "too_complex",
    "png_600000_ancillary_chunks": "too_complex",
    "png_4000px_interlaced_rgba16": None,
    "gif_4000000_comment_subblocks": "too_complex",
    "gif_4000px_lzw_bomb": None,
    "tiff_4000px_1M_tiles": "too_complex",
    "tiff_4000px_4000_strips": None,
    "bmp_4000px_rle8_3_7M_runs": "too_complex",
    "webp_2000px_lossless_noise": None,
    "webp_20000_frames": None,
    "png_2000_ztxt_1mb_each": "corrupt_image",  # Pillow's own MAX_TEXT_MEMORY, after 64 MB of text
    "jpeg_4000px_99_scans": None,
    "png_1000px_19990_idat_chunks": None,
    "gif_19990_comment_subblocks": None,
    "tiff_4000px_15625_tiles": None,
    "bmp_4000px_rle8_0_9MB": None,
}


def test_the_catalogue_is_covered():
    assert set(EXPECTED) == set(crafted.CATALOGUE)


@pytest.mark.parametrize("name", list(crafted.CATALOGUE))
def test_crafted_file_is_refused_or_decoded_within_budget(name):
    data = crafted.CATALOGUE[name]()
    assert len(data) <= LIMITS.max_request_bytes, "the crafted file must be of legal byte count"
    started = time.process_time()
    try:
        image = open_image(data, LIMITS)
        outcome = None
    except InputError as err:
        outcome = err
    seconds = time.process_time() - started
    print(f"{name}: {len(data) / 1e6:.2f} MB, {seconds:.3f} s CPU, "
          f"{outcome.code if outcome else 'decoded'}")
    assert seconds < BUDGET_CPU_S, f"{name} cost {seconds:.2f} s of CPU"
    if EXPECTED[name] is None:
        assert outcome is None, outcome and outcome.body()
        assert max(image.size) <= LIMITS.max_image_side
    else:
        assert outcome is not None and outcome.code == EXPECTED[name], outcome and outcome.body()
        assert 400 <= outcome.status < 500 and outcome.message
    if outcome is not None and outcome.code == "too_complex":
        assert outcome.status == 422 and "too long" in outcome.message and "Save it" in outcome.message


def test_ordinary_progressive_and_chunked_files_pass():
    """Files as editors write them stay well inside the limits."""
    import numpy as np

    rng = np.random.default_rng(1)
    photo = rng.integers(0, 256, (1200, 1600, 3), dtype=np.uint8)
    for options in ({"progressive": True}, {"progressive": True, "optimize": True}, {"subsampling": 0}):
        buf = io.BytesIO()
        Image.fromarray(photo).save(buf, format="JPEG", quality=90, **options)
        image = open_image(buf.getvalue(), LIMITS)  # decoded, at the DCT scale draft_large_jpeg picks
        scale = jpeg_draft_scale((1600, 1200))
        assert scale > 1 and image.size == (1600 // scale, 1200 // scale) and image.mode == "L"
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, format="TIFF", compression="tiff_lzw")
    assert open_image(buf.getvalue(), LIMITS).size == (1600, 1200)


def test_truncated_framing_is_left_to_the_decoder():
    data = crafted.jpeg_many_scans(64, 0)
    for cut in (3, 10, 40, len(data) // 2):
        with pytest.raises(InputError) as caught:
            open_image(data[:cut], LIMITS)
        assert caught.value.code == "corrupt_image"


def test_tiff_with_jpeg_compression_is_415():
    data = bytearray(crafted.tiff_many_strips(16))
    at = data.index(struct.pack("<HHI", 259, 3, 1))
    data[at + 8:at + 10] = struct.pack("<H", 7)
    with pytest.raises(InputError) as caught:
        open_image(bytes(data), LIMITS)
    assert caught.value.status == 415 and "JPEG compression" in caught.value.message


def test_pillow_bomb_guard_is_on_and_maps_to_image_too_large():
    assert Image.MAX_IMAGE_PIXELS is not None
    header = crafted._png_header(30_000, 30_000)  # 900 Mpx: Pillow itself refuses it at open
    png = header + crafted._png_chunk(b"IDAT", zlib.compress(b"")) + crafted._png_chunk(b"IEND", b"")
    with pytest.raises(InputError) as caught:
        open_image(png, LIMITS)
    assert (caught.value.status, caught.value.code) == (413, "image_too_large")
