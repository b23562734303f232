"""One test per canonicalisation rule (model_defs/preprocessing.py), on small crafted images."""
import io

import numpy as np
import pytest
from PIL import Image

from model_defs.preprocessing import (
    MNIST_DIGIT_BOX, canonicalize, centre_of_mass, light_on_dark, to_grayscale,
)


def blob(h=60, w=40, top=10, left=8, bh=30, bw=12, ink=255, paper=0):
    """A rectangle of `ink` on `paper`."""
    img = np.full((h, w), paper, dtype=np.uint8)
    img[top:top + bh, left:left + bw] = ink
    return img


# ---- rule 1: grayscale ------------------------------------------------------------------------
def test_rgb_uses_itu_601_luma():
    rgb = Image.new("RGB", (4, 4), (255, 0, 0))
    assert to_grayscale(rgb)[0, 0] == 76  # 0.299 * 255


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))  # fully transparent black
    assert (to_grayscale(rgba) == 255).all()
    la = Image.new("LA", (4, 4), (0, 128))  # half-transparent black on white
    assert abs(int(to_grayscale(la)[0, 0]) - 127) <= 1


def test_palette_with_transparency_is_composited_on_white():
    p = Image.new("P", (4, 4), 0)
    p.putpalette([0, 0, 0] * 256)
    p.info["transparency"] = 0
    assert (to_grayscale(p) == 255).all()


def png_roundtrip(image: Image.Image, **params) -> Image.Image:
    """The image as a client's PNG decodes: mode and tRNS as PIL reads them back."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", **params)
    decoded = Image.open(io.BytesIO(buf.getvalue()))
    decoded.load()
    return decoded


# One pixel of each picture is black and fully transparent (a tRNS colour key, or alpha 0), the
# other is opaque: every mode must give white for the first and keep the second.
OPAQUE = 200
TRANSPARENT_BLACK = {
    "1": lambda: png_roundtrip(Image.fromarray(np.array([[False, True]])), transparency=0),
    "L": lambda: png_roundtrip(Image.fromarray(np.array([[0, OPAQUE]], np.uint8)), transparency=0),
    "I;16": lambda: png_roundtrip(Image.fromarray(np.array([[0, OPAQUE * 257]], np.uint16)), transparency=0),
    "I": lambda: keyed(Image.fromarray(np.array([[0, OPAQUE * 257]], np.int32)), 0),
    "I;16B": lambda: keyed(Image.frombytes("I;16B", (2, 1), np.array([0, OPAQUE * 257], ">u2").tobytes()), 0),
    "P": lambda: keyed(Image.fromarray(np.array([[0, OPAQUE]], np.uint8)).convert("P"), 0),
    "RGB": lambda: png_roundtrip(Image.fromarray(np.array([[[0] * 3, [OPAQUE] * 3]], np.uint8)), transparency=(0, 0, 0)),
    "RGBA": lambda: Image.fromarray(np.array([[[0, 0, 0, 0], [OPAQUE] * 3 + [255]]], np.uint8)),
    "LA": lambda: Image.fromarray(np.array([[[0, 0], [OPAQUE, 255]]], np.uint8), "LA"),
    "La": lambda: Image.fromarray(np.array([[[0, 0], [OPAQUE, 255]]], np.uint8), "LA").convert("La"),
    "PA": lambda: grey_palette(Image.frombytes("PA", (2, 1), bytes([0, 0, OPAQUE, 255]))),
}


def grey_palette(image: Image.Image) -> Image.Image:
    image.putpalette([level for i in range(256) for level in (i, i, i)])
    return image


def keyed(image: Image.Image, key) -> Image.Image:
    image.info["transparency"] = key
    return image


@pytest.mark.parametrize("mode", list(TRANSPARENT_BLACK))
def test_transparent_pixels_are_white_in_every_mode(mode):
    image = TRANSPARENT_BLACK[mode]()
    assert image.mode == mode
    gray = to_grayscale(image)
    assert gray.dtype == np.uint8 and gray.shape == (1, 2)
    opaque = 255 if mode == "1" else OPAQUE
    assert gray.tolist() == [[255, opaque]], mode


def test_arrays_pass_through_untouched():
    """Training data are 2-D uint8 arrays: to_grayscale must hand them back as they are."""
    arr = np.random.default_rng(3).integers(0, 256, (9, 7)).astype(np.uint8)
    assert to_grayscale(arr) is arr


def test_16_bit_samples_scale_to_8_bit():
    img = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert (to_grayscale(img) == 255).all()
    half = Image.fromarray(np.full((4, 4), 32896, dtype=np.uint16))
    assert (to_grayscale(half) == 128).all()


def test_one_bit_image():
    img = Image.fromarray(blob() > 0).convert("1")
    assert set(np.unique(to_grayscale(img))) == {0, 255}


def test_arrays_must_be_2d_uint8():
    with pytest.raises(ValueError, match="2-D"):
        to_grayscale(np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        to_grayscale(np.zeros((2, 2), np.float32))


# ---- rule 2: polarity -------------------------------------------------------------------------
def test_dark_ink_on_light_paper_is_inverted():
    paper = blob(ink=20, paper=235)
    assert (light_on_dark(paper) == 255 - paper).all()


def test_light_on_dark_is_kept():
    mnist_like = blob()
    assert light_on_dark(mnist_like) is mnist_like


def test_both_polarities_give_the_same_digit():
    light = canonicalize(blob(ink=255, paper=0), "digit", (28, 28))
    dark = canonicalize(blob(ink=0, paper=255), "digit", (28, 28))
    assert (light == dark).all()


# ---- rule 3: canonical input is left alone (idempotence) --------------------------------------
@pytest.mark.parametrize("kind, size", [("digit", (28, 28)), ("digit", (32, 32)), ("fashion", (28, 28))])
def test_canonicalize_is_idempotent(kind, size):
    rng = np.random.default_rng(0)
    once = canonicalize(blob(h=50, w=70, top=5, left=30, bh=40, bw=20) // 2 + rng.integers(0, 60, (50, 70)).astype(np.uint8), kind, size)
    assert once.shape == size
    assert (canonicalize(once, kind, size) == once).all()


def test_canonical_size_passes_through_bit_for_bit():
    img = np.random.default_rng(1).integers(0, 100, (28, 28)).astype(np.uint8)
    assert (canonicalize(img, "fashion", (28, 28)) == img).all()


# ---- rule 4: background, stretch, crop, frame -------------------------------------------------
def test_background_is_subtracted_and_contrast_stretched():
    grey = blob(ink=140, paper=60)
    out = canonicalize(grey, "digit", (28, 28))
    assert out.max() == 255 and out.min() == 0


def test_digit_fits_a_20_pixel_box_centred_by_mass_in_28():
    out = canonicalize(blob(h=300, w=200, top=20, left=10, bh=150, bw=50), "digit", (28, 28))
    rows = np.flatnonzero(out.any(axis=1))
    cols = np.flatnonzero(out.any(axis=0))
    assert rows[-1] - rows[0] + 1 == MNIST_DIGIT_BOX   # the long side is 20
    assert cols[-1] - cols[0] + 1 < MNIST_DIGIT_BOX    # aspect ratio kept
    r, c = centre_of_mass(out)
    assert abs(r - 14) <= 1 and abs(c - 14) <= 1


def test_lenet_frame_is_the_mnist_frame_with_a_2_pixel_margin():
    img = blob(h=90, w=120, top=30, left=70, bh=50, bw=20)
    framed32 = canonicalize(img, "digit", (32, 32))
    framed28 = canonicalize(img, "digit", (28, 28))
    assert (framed32[2:30, 2:30] == framed28).all()
    assert framed32[:2].max() == 0 and framed32[-2:].max() == 0


def test_photo_sized_dark_digit_on_white_paper():
    """A 1200x900 'photo': dark stroke on slightly uneven white paper, off-centre."""
    rng = np.random.default_rng(2)
    photo = (235 + rng.integers(-8, 8, (900, 1200))).astype(np.uint8)
    photo[200:700, 800:860] = 30  # a vertical stroke, a '1'
    out = canonicalize(Image.fromarray(photo).convert("RGB"), "digit", (28, 28))
    assert out.shape == (28, 28)
    rows = np.flatnonzero(out.max(axis=1) > 128)
    assert rows[-1] - rows[0] + 1 >= MNIST_DIGIT_BOX - 1
    assert out[0].max() < 40 and out[:, 0].max() < 40   # paper texture is gone


def test_fashion_longest_side_28_centred():
    out = canonicalize(blob(h=100, w=100, top=10, left=30, bh=80, bw=40, ink=200), "fashion", (28, 28))
    rows = np.flatnonzero(out.any(axis=1))
    cols = np.flatnonzero(out.any(axis=0))
    assert rows[-1] - rows[0] + 1 == 28
    assert 12 <= cols[-1] - cols[0] + 1 <= 16
    assert abs((cols[0] + cols[-1]) / 2 - 13.5) <= 1


def test_blank_image_gives_a_blank_frame():
    assert canonicalize(np.full((50, 50), 255, np.uint8), "digit", (28, 28)).max() == 0


def test_unknown_kind_is_an_error():
    with pytest.raises(ValueError, match="unknown preprocessing"):
        canonicalize(np.zeros((40, 40), np.uint8), "audio", (28, 28))
