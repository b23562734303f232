"""Large pictures are made cheap without changing what the models see.

A large JPEG is decoded at a reduced DCT scale in luma only (handlers/image_decoding.py,
`draft_large_jpeg`), the digit's ink is found on the picture box-resized to DIGIT_WORKING_SIDE
(model_defs/preprocessing.py, `shrink_to`), and the ink finder's median, closing and opening
(model_defs/filters.py) are numpy versions of scipy's filters that must give the same bytes. Small pictures are pinned bit for bit by
tests/unit/test_canonical_identity.py; these tests pin the rule for large ones.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from handlers.image_decoding import jpeg_draft_scale, open_image
from model_defs.filters import closing, median_filter, opening
from model_defs.preprocessing import (
    DIGIT_WORKING_SIDE,
    MNIST_DIGIT_BOX,
    MNIST_FRAME,
    canonicalize,
    centres_of_mass,
    shrink_to,
)
from settings.limits import LIMITS


def encode(pixels: np.ndarray, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **params)
    return buffer.getvalue()


def page(width: int, height: int, seed: int = 0) -> np.ndarray:
    """An RGB page, light with noise, a dark block a quarter of the way in (uint8 [H, W, 3])."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(180, 256, (height, width, 3), dtype=np.uint8)
    pixels[height // 4: height // 2, width // 4: width // 2] = 20
    return pixels


def full_decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# ---- the decoding rule ------------------------------------------------------------------------
@pytest.mark.parametrize("size, scale", [
    ((640, 480), 2), ((480, 640), 2),                      # a phone photo: 320x240
    ((4032, 3024), 8), ((8192, 6144), 8),                  # a 12 Mpx camera picture: 504x378
    ((1920, 1080), 8), ((1912, 1080), 4),                  # 1920 / 8 = 240; ceil(1912 / 8) = 239
    ((957, 720), 4), ((956, 720), 2),                      # ceil(957 / 4) = 240; 956 / 4 = 239
    ((479, 300), 2), ((478, 478), 1),                      # ceil(479 / 2) = 240; 239 is too small
    ((DIGIT_WORKING_SIDE, 10), 1), ((28, 28), 1), ((1, 1), 1),
    ((5000, 3), 2), ((5000, 1), 1),                        # the short side keeps at least one pixel
])
def test_draft_scale_keeps_the_working_side(size, scale):
    assert jpeg_draft_scale(size) == scale


def test_a_large_jpeg_decodes_drafted_in_luma():
    pixels = page(640, 480)
    image = open_image(encode(pixels, "JPEG", quality=90), LIMITS)
    assert image.size == (320, 240) and image.mode == "L"
    # what the DCT scaling gives is the half-size grey picture, within JPEG's own error
    expected = np.asarray(full_decode(encode(pixels, "JPEG", quality=90)).convert("L").reduce(2), dtype=np.int16)
    assert np.abs(np.asarray(image, dtype=np.int16) - expected).mean() < 3


def test_a_large_grey_jpeg_and_a_camera_sized_one_are_drafted_too():
    grey = open_image(encode(page(1280, 960)[..., 0], "JPEG"), LIMITS)
    assert grey.size == (320, 240) and grey.mode == "L"
    camera = open_image(encode(page(4032, 3024), "JPEG", quality=80), LIMITS)
    assert camera.size == (504, 378) and camera.mode == "L"


def test_exif_orientation_is_applied_after_drafting():
    pixels = page(640, 480)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: the viewer turns it 90 degrees clockwise
    image = open_image(encode(pixels, "JPEG", quality=95, exif=exif.tobytes()), LIMITS)
    assert image.size == (240, 320) and image.mode == "L"
    upright = np.asarray(Image.fromarray(pixels).convert("L").reduce(2).transpose(Image.Transpose.ROTATE_270))
    assert np.abs(np.asarray(image, dtype=np.int16) - upright).mean() < 3


@pytest.mark.parametrize("fmt, params", [("PNG", {}), ("WEBP", {"lossless": True}), ("BMP", {})])
def test_other_formats_decode_in_full(fmt, params):
    data = encode(page(640, 480), fmt, **params)
    image = open_image(data, LIMITS)
    assert image.size == (640, 480) and image.mode == "RGB"
    assert np.array_equal(np.asarray(image), np.asarray(full_decode(data)))


def test_a_jpeg_under_twice_the_working_side_decodes_as_before():
    data = encode(page(2 * DIGIT_WORKING_SIDE - 2, 300), "JPEG", quality=85)
    image = open_image(data, LIMITS)
    assert image.size == (2 * DIGIT_WORKING_SIDE - 2, 300) and image.mode == "RGB"
    assert np.array_equal(np.asarray(image), np.asarray(full_decode(data)))


# ---- the working side -------------------------------------------------------------------------
def test_shrink_to_the_working_side():
    gray = np.arange(480 * 640, dtype=np.uint32).reshape(480, 640).astype(np.uint8)
    assert shrink_to(gray, DIGIT_WORKING_SIDE).shape == (180, 240)
    assert shrink_to(gray.T, DIGIT_WORKING_SIDE).shape == (240, 180)
    assert shrink_to(np.zeros((3, 5000), np.uint8), DIGIT_WORKING_SIDE).shape == (1, 240)
    small = gray[:DIGIT_WORKING_SIDE, :DIGIT_WORKING_SIDE]
    assert shrink_to(small, DIGIT_WORKING_SIDE) is small  # not resized: small pictures keep their bytes


@pytest.fixture(scope="module")
def photos() -> list[bytes]:
    from export.datasets import load_raw
    from export.photos import photo_rng, render_photo
    digits = load_raw("mnist").test_images
    return [render_photo(np.asarray(digits[i], dtype=np.uint8), photo_rng(15, i)) for i in range(0, 120, 10)]


def test_drafted_photos_are_framed_like_fully_decoded_ones(photos):
    """The served path (a 320x240 luma draft) frames each digit as the full 640x480 RGB decode does:
    a 20-pixel box, centred by centre of mass, nearly the same pixels."""
    for jpeg in photos:
        served = canonicalize(open_image(jpeg, LIMITS), "digit", (MNIST_FRAME, MNIST_FRAME))
        full = canonicalize(full_decode(jpeg), "digit", (MNIST_FRAME, MNIST_FRAME))
        rows = np.flatnonzero((served > 64).any(axis=1))
        cols = np.flatnonzero((served > 64).any(axis=0))
        assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 in range(MNIST_DIGIT_BOX - 2, MNIST_DIGIT_BOX + 1)
        assert np.allclose(centres_of_mass([served])[0], (MNIST_FRAME / 2, MNIST_FRAME / 2), atol=0.75)
        # over 200 photos of MNIST test digits the draft's framing is up to a pixel off the full decode's:
        # centres of mass median 0.03 px apart, 90th percentile 0.63, worst 0.99; mean pixel difference
        # median 0.8, 90th percentile 9.3, worst 27 (a one-pixel shift); a wrong crop or scale is 40+
        assert np.allclose(centres_of_mass([served])[0], centres_of_mass([full])[0], atol=1.0)
        assert np.abs(served.astype(np.int16) - full).mean() < 30


# ---- find_ink's filters, bit for bit scipy's ---------------------------------------------------
SHAPES = [(1, 1), (2, 7), (13, 13), (40, 54), (45, 60), (64, 48)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", [3, 11, 13])
def test_median_filter_is_scipys(shape, size):
    rng = np.random.default_rng(size)
    for picture in (rng.integers(0, 256, shape, dtype=np.uint8),
                    np.clip(rng.normal(128, 40, shape), 0, 255).astype(np.uint8)):
        expected = ndimage.median_filter(picture, size=size, mode="nearest")
        assert np.array_equal(median_filter(picture, size), expected)


@pytest.mark.parametrize("shape", SHAPES + [(90, 120), (120, 160)])
@pytest.mark.parametrize("size", [3, 5, 21, 33])
def test_closing_and_opening_are_scipys(shape, size):
    picture = np.random.default_rng(size).integers(0, 256, shape, dtype=np.uint8)
    assert np.array_equal(closing(picture, size), ndimage.grey_closing(picture, size=size, mode="nearest"))
    assert np.array_equal(opening(picture, size), ndimage.grey_opening(picture, size=size, mode="nearest"))
