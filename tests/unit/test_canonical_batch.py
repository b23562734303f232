"""canonicalize_many / CanonicalStack: canonicalize's bytes, with small digit pictures framed together.

The bit-for-bit checks over every training and held-out set are in test_canonical_identity.py; these
check the stack's bookkeeping: order, which pictures wait, and the pictures it leaves to canonicalize.
"""
import numpy as np
import pytest

from model_defs.canonical_batch import CanonicalStack, canonicalize_many
from model_defs.preprocessing import canonicalize, canonicalize_stack


def digit(seed: int, shape=(28, 28)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picture = np.zeros(shape, np.uint8)
    top, left = rng.integers(2, shape[0] // 3), rng.integers(2, shape[1] // 3)
    picture[top : top + shape[0] // 2, left : left + 3] = rng.integers(120, 256)
    picture[top : top + 3, left : left + shape[1] // 3] = rng.integers(120, 256)
    picture[rng.integers(0, shape[0]), rng.integers(0, shape[1])] = 200  # a speck: a second piece
    return 255 - picture if seed % 3 == 0 else picture  # some dark on light


@pytest.mark.parametrize("size", [(32, 32), (28, 28), (36, 36)])
def test_a_mixed_batch_keeps_its_order_and_canonicalize_bytes(size):
    pictures = [digit(i) for i in range(6)] + [digit(7, (20, 30)), np.zeros((28, 28), np.uint8),
                                               np.full((28, 28), 255, np.uint8), digit(8, (300, 200)),
                                               digit(9, (32, 32)), digit(10, (20, 30)), digit(11)]
    expected = np.stack([canonicalize(p, "digit", size) for p in pictures])
    assert np.array_equal(canonicalize_many(pictures, "digit", size), expected)


def test_only_small_digit_pictures_wait_to_be_framed_together():
    stack = CanonicalStack("digit", (32, 32))
    small, large, canonical = digit(1), digit(2, (300, 200)), digit(3, (32, 32))
    slots = [stack.add(p) for p in (small, large, canonical, small)]
    assert slots == [0, 1, 2, 3]
    assert stack.waiting == {(28, 28): [0, 3]}  # the large one was framed as it came: its pixels are gone
    assert stack.pictures[1].shape == (32, 32)
    assert np.array_equal(stack.canonical(0), canonicalize(small, "digit", (32, 32)))


def test_fashion_pictures_are_framed_one_by_one():
    stack = CanonicalStack("fashion", (28, 28))
    for seed in range(4):
        stack.add(digit(seed, (40, 40)))
    assert not stack.waiting
    assert np.array_equal(stack.images(), np.stack([canonicalize(digit(s, (40, 40)), "fashion", (28, 28))
                                                    for s in range(4)]))


def test_an_empty_stack_has_no_images():
    assert canonicalize_many([], "digit", (32, 32)).shape == (0, 32, 32)


def test_ink_at_the_edge_between_two_stacked_pictures_stays_in_each():
    """Ink along the bottom of one picture and along the top of the next, each picture in two pieces:
    framed together, each is framed as alone (no piece joins two pictures)."""
    upper, lower = np.zeros((28, 28), np.uint8), np.zeros((28, 28), np.uint8)
    upper[18:28, 10:14], upper[2:9, 4:7] = 255, 200
    lower[0:9, 9:13], lower[16:26, 18:21] = 255, 180
    pictures = [upper, lower, upper, lower]
    expected = np.stack([canonicalize(p, "digit", (32, 32)) for p in pictures])
    assert np.array_equal(canonicalize_many(pictures, "digit", (32, 32)), expected)


def page(seed: int, lit: bool) -> np.ndarray:
    """A 200x200 page with a dark stroke, a speck and the table along its left edge; evenly lit, or lit
    from one side (a gradient across it)."""
    rng = np.random.default_rng(seed)
    light = np.linspace(90, 235, 200)[None, :] if lit else np.full((1, 200), 220.0)
    picture = light + rng.normal(0, 4, (200, 200))
    picture[40:150, 90 + seed : 104 + seed] *= 0.2  # the stroke
    picture[170:174, 150:154] *= 0.3  # a speck
    picture[:, :12] = 35  # the table beside the sheet
    return np.clip(picture, 0, 255).astype(np.uint8)


def test_a_stack_of_every_kind_of_picture_is_each_picture_alone():
    """Dark ink on a dark-grey page (not inverted) beside light ink, and flat pages beside unevenly lit
    ones with page edges: canonicalize_stack frames each picture as canonicalize does."""
    dark_page = np.full((40, 40), 90, np.uint8)
    dark_page[8:30, 18:22] = 10
    groups = [[dark_page, digit(1, (40, 40)), dark_page, digit(2, (40, 40))],
              [page(0, lit=True), page(1, lit=False), page(2, lit=False), page(3, lit=True)]]
    for group in groups:
        for size in ((28, 28), (32, 32)):
            expected = np.stack([canonicalize(p, "digit", size) for p in group])
            assert np.array_equal(canonicalize_stack(np.stack(group), "digit", size), expected)
