"""The evaluation renderers (export/photos.py, evaluation/typed.py): reproducible from a seed,
within the sizes, qualities and heights the evaluation sets describe, and varied."""
from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from evaluation import fonts, typed
from export import photos


def _digit(label: int = 3) -> np.ndarray:
    """A real MNIST test digit when the data is there, else a drawn one."""
    try:
        from export.datasets import load_raw
        test = load_raw("mnist")
        images, labels = test.test_images, test.test_labels
        return np.asarray(images[int(np.flatnonzero(np.asarray(labels) == label)[0])], dtype=np.uint8)
    except Exception:
        from PIL import ImageDraw
        canvas = Image.new("L", (28, 28), 0)
        ImageDraw.Draw(canvas).ellipse((8, 5, 20, 23), outline=255, width=3)
        return np.asarray(canvas)


def _luma(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"), dtype=np.float32)


def _same_tables_as_quality(image: Image.Image, quality: int) -> bool:
    """The JPEG's quantisation tables are those libjpeg writes at `quality`."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, format="JPEG", quality=quality, subsampling=2)
    reference = Image.open(io.BytesIO(buffer.getvalue())).quantization
    return {k: list(v) for k, v in image.quantization.items()} == {k: list(v) for k, v in reference.items()}


# ---- phone photos --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def photo_batch():
    digit = _digit()
    return [photos.render_photo_with_info(digit, photos.photo_rng(7, i)) for i in range(16)]


def test_photo_is_reproducible_from_its_seed():
    digit = _digit()
    first = photos.render_photo(digit, np.random.default_rng(42))
    assert photos.render_photo(digit, np.random.default_rng(42)) == first
    assert photos.render_photo(digit, np.random.default_rng(43)) != first
    assert photos.render_photo_with_info(digit, photos.photo_rng(1, 5))[0] == \
        photos.render_photo_with_info(digit, photos.photo_rng(1, 5))[0]


def test_photo_is_a_640x480_jpeg_of_quality_70_to_90(photo_batch):
    for jpeg, info in photo_batch:
        image = Image.open(io.BytesIO(jpeg))
        assert image.format == "JPEG"
        assert image.size == (640, 480)
        assert image.mode == "RGB"
        assert 70 <= info.quality <= 90
        assert _same_tables_as_quality(image, info.quality)


def test_photo_digit_is_140_to_260_px_tall_inside_the_page_and_rotated_within_10_degrees(photo_batch):
    for jpeg, info in photo_batch:
        left, top, right, bottom = info.ink_box
        assert 140 <= info.digit_height <= 260
        assert 0 <= left < right <= 640 and 0 <= top < bottom <= 480
        assert abs(info.rotation) <= 10


def test_photo_ink_is_dark_on_paper_and_not_pure_black(photo_batch):
    for jpeg, info in photo_batch:
        luma = _luma(jpeg)
        left, top, right, bottom = info.ink_box
        inside = luma[top:bottom, left:right]
        # the darkest pixels of the picture are the digit's ink (specks are few and small)
        darkest = luma <= np.percentile(luma, 0.5)
        in_box = darkest[top:bottom, left:right].sum() / darkest.sum()
        assert in_box >= 0.6, info
        assert np.percentile(inside, 2) < np.median(luma) - 40, info
        assert min(info.ink_rgb) > 0 and max(info.ink_rgb) < 200


def test_photos_are_varied(photo_batch):
    infos = [info for _, info in photo_batch]
    assert len({jpeg for jpeg, _ in photo_batch}) == len(photo_batch)
    assert np.ptp([i.digit_height for i in infos]) >= 50
    assert np.ptp([i.ink_box[0] for i in infos]) >= 150
    assert np.ptp([i.ink_box[1] for i in infos]) >= 80
    assert len({i.quality for i in infos}) >= 5
    assert min(i.rotation for i in infos) < -3 and max(i.rotation for i in infos) > 3
    assert len({i.paper_rgb for i in infos}) == len(infos)
    assert any(i.shadow > 0.2 for i in infos) and any(i.shadow == 0 for i in infos)
    # lighting: the page's brightness varies across the picture and between pictures
    lumas = [_luma(jpeg) for jpeg, _ in photo_batch]
    spreads = [np.percentile(luma, 95) - np.percentile(luma, 30) for luma in lumas]
    assert max(spreads) > 40
    assert np.ptp([np.median(luma) for luma in lumas]) > 30


def test_photo_refuses_a_blank_digit():
    with pytest.raises(ValueError):
        photos.render_photo(np.zeros((28, 28), np.uint8), np.random.default_rng(0))


# ---- typed digits --------------------------------------------------------------------------------

def test_font_families_are_data_with_their_debian_packages():
    assert len(fonts.FAMILY_NAMES) == len(set(fonts.FAMILY_NAMES)) >= 30
    for family in fonts.FAMILIES:
        assert family.package.startswith("fonts-")
        assert family.category in {"sans", "serif", "mono", "hand", "script"}
        assert family.files and all(f.startswith("/usr/share/") for f in family.files)
    for wanted in ("fonts-dejavu-core", "fonts-liberation", "fonts-urw-base35", "fonts-comic-neue",
                   "fonts-dancingscript"):
        assert wanted in fonts.PACKAGES


@pytest.fixture(scope="module")
def typed_set():
    if not fonts.available_families():
        pytest.skip("no font family installed (make evaluate installs them)")
    return typed.render_typed_set(seed=3)


def test_typed_set_covers_every_installed_family_and_digit(typed_set):
    installed = {f.name for f in fonts.available_families()}
    per_family = Counter(family for _, _, family in typed_set)
    assert set(per_family) == installed
    for name in installed:
        assert {label for _, label, family in typed_set if family == name} == set(range(10))
    if installed == set(fonts.FAMILY_NAMES):
        assert len(typed_set) >= 760


def test_typed_set_is_reproducible_and_seeded(typed_set):
    family = fonts.available_families()[:2]
    again = typed.render_typed_set(seed=3, families=family)
    assert again == [row for row in typed_set if row[2] in {f.name for f in family}]
    other = typed.render_typed_set(seed=4, families=family)
    assert [r[0] for r in other] != [r[0] for r in again]


def test_typed_digits_are_dark_on_white_jpegs_of_varied_size(typed_set):
    sizes = []
    for jpeg, label, family in typed_set[::7]:
        image = Image.open(io.BytesIO(jpeg))
        assert image.format == "JPEG"
        luma = np.asarray(image.convert("L"), dtype=np.float32)
        border = np.concatenate([luma[0], luma[-1], luma[:, 0], luma[:, -1]])
        assert np.median(border) > 200, (label, family)          # white(ish) paper
        assert luma.min() < np.median(border) - 80, (label, family)  # dark ink
        sizes.append(image.size)
    heights = [h for _, h in sizes]
    assert max(heights) > 4 * min(heights)
    assert len(set(sizes)) > len(sizes) * 0.8
