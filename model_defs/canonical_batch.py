"""`canonicalize_many`: many pictures at once, bit for bit what `canonicalize` gives each of them.

`model_defs/preprocessing.py` defines the canonical input, one picture at a time; that stays the
definition. On small digit pictures (an MNIST-sized 28x28 framed for LeNet-5's 32x32, a 64-image
.npy request) almost all of its cost is Python and NumPy's per-call overhead around arrays of a few
hundred pixels, so this module runs `find_ink`'s steps for small pictures of one shape as whole-stack
NumPy calls: each image's histogram levels, Otsu threshold, ink pieces, quantiles and dilation at
once. Every other picture (photos, large scans, fashion, pictures whose ink is in several pieces at
the step that needs per-piece rules) goes through `canonicalize`'s own code.

The arithmetic is the scalar code's, operation for operation and in the same dtypes (float32 where
it is float32, Python floats cast as NumPy casts them), so the results are equal bit for bit:
tests/unit/test_canonical_batch.py checks it on every held-out image and on edge cases.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
from scipy import ndimage

from model_defs.preprocessing import (
    DIGIT_WORKING_SIDE,
    MIN_INK_CONTRAST,
    MNIST_DIGIT_BOX,
    MNIST_FRAME,
    PAGE_SIDE,
    ImageLike,
    _dilate,
    _fit,
    _main_ink,
    border_pixels,
    canonicalize,
    reduce_large,
    to_grayscale,
)

# The stack path takes pictures the scalar code treats as a flat page with no page edges:
# min side under 2 x MNIST_FRAME (`_ink_signal`'s flat branch), not shrunk (long side at most
# DIGIT_WORKING_SIDE), and so under PAGE_SIDE (no edge rule in `_main_ink`).
STACK_MAX_SHORT_SIDE = 2 * MNIST_FRAME - 1
assert STACK_MAX_SHORT_SIDE < PAGE_SIDE
# One 8-connected plane per picture: ndimage.label over a stack labels each picture on its own.
PLANE_BY_PLANE = np.zeros((3, 3, 3), dtype=bool)
PLANE_BY_PLANE[1] = True


# Fewer small pictures of one shape than this are framed one by one: the stack's NumPy calls cost
# ~200 us whatever its size, then ~30 us a picture, where `canonicalize` costs ~130 us a picture
# (lenet5's 28x28 held-out digits, one thread, 2-CPU Xeon, us a picture: 2 in a stack 131, 3: 96,
# 4: 79, 16: 42, 64: 33; in the handler, a batch of 2 PNGs 596 picture by picture, 586 stacked).
MIN_STACK = 3


def canonicalize_many(images: Sequence[ImageLike], kind: str, size: tuple[int, int]) -> np.ndarray:
    """[canonicalize(image, kind, size) for image in images] as one uint8 [N, H, W] array."""
    stack = CanonicalStack(kind, size)
    for image in images:
        stack.add(image)
    return stack.images()


class CanonicalStack:
    """Pictures in, their canonical images out, `canonicalize`'s results bit for bit.

    `add` canonicalises a picture at once unless it is a small digit picture, whose grey levels
    (at most 55 x 240 pixels) wait for `images` to frame all of one shape together; so a batch of
    requests holds one large picture's pixels at a time, never all of them.
    """

    def __init__(self, kind: str, size: tuple[int, int]):
        self.kind, self.size = kind, (int(size[0]), int(size[1]))
        self.pictures: list[np.ndarray] = []  # by slot: canonical, or grey levels waiting for `images`
        self.waiting: dict[tuple[int, int], list[int]] = defaultdict(list)  # shape -> slots

    def add(self, image: ImageLike) -> int:
        """Take a decoded picture (PIL image or 2-D uint8 array); returns its slot in `images()`."""
        gray = reduce_large(to_grayscale(image))
        slot = len(self.pictures)
        if self._stackable(gray.shape):
            self.waiting[gray.shape].append(slot)
            self.pictures.append(gray)
        else:
            self.pictures.append(canonicalize(gray, self.kind, self.size))
        return slot

    def images(self) -> np.ndarray:
        """uint8 [slots, H, W]: the canonical image of every picture added, in order."""
        out = np.empty((len(self.pictures), *self.size), dtype=np.uint8)
        waiting = {slot for slots in self.waiting.values() for slot in slots}
        for slot, picture in enumerate(self.pictures):
            if slot not in waiting:
                out[slot] = picture
        for slots in self.waiting.values():
            if len(slots) < MIN_STACK:
                for slot in slots:
                    out[slot] = canonicalize(self.pictures[slot], self.kind, self.size)
            else:
                out[slots] = frame_digits(np.stack([self.pictures[slot] for slot in slots]),
                                          margin=(self.size[0] - MNIST_FRAME) // 2)
        return out

    def canonical(self, slot: int) -> np.ndarray:
        """One slot's canonical image by `canonicalize` alone (what `images()` gives it, picture by picture)."""
        return canonicalize(self.pictures[slot], self.kind, self.size)

    def _stackable(self, shape: tuple[int, int]) -> bool:
        """A digit picture `frame_digits` takes: small, framed (not already canonical), a valid digit size."""
        height, width = self.size
        return (self.kind == "digit" and height == width and height >= MNIST_FRAME
                and (height - MNIST_FRAME) % 2 == 0 and shape != self.size
                and 2 < min(shape) <= STACK_MAX_SHORT_SIDE and max(shape) <= DIGIT_WORKING_SIDE)


def frame_digits(grays: np.ndarray, margin: int) -> np.ndarray:
    """`light_on_dark` then `frame_digit(gray, margin)` of each small picture of a uint8 [N, h, w] stack."""
    side = MNIST_FRAME + 2 * margin
    frames = np.zeros((len(grays), side, side), dtype=np.uint8)
    inks = _find_inks(*_light_on_dark(grays))
    found = [i for i, ink in enumerate(inks) if ink is not None]
    if not found:
        return frames
    fitted = [_fit(inks[i], MNIST_DIGIT_BOX) for i in found]
    heights = np.array([f.shape[0] for f in fitted])
    widths = np.array([f.shape[1] for f in fitted])
    # `centre_of_mass` of each, on one zero-padded stack: its sums are of whole numbers, exact in any order
    padded = np.zeros((len(found), MNIST_DIGIT_BOX, MNIST_DIGIT_BOX), dtype=np.float64)
    for k, content in enumerate(fitted):
        padded[k, : content.shape[0], : content.shape[1]] = content
    row_mass, col_mass = padded.sum(axis=2), padded.sum(axis=1)
    total = row_mass.sum(axis=1)
    positions = np.arange(MNIST_DIGIT_BOX, dtype=np.float64)
    weighed = total > 0
    divisor = np.where(weighed, total, 1.0)
    centre_rows = np.where(weighed, (row_mass @ positions) / divisor + 0.5, heights / 2)
    centre_cols = np.where(weighed, (col_mass @ positions) / divisor + 0.5, widths / 2)
    tops = _offsets(centre_rows, heights) + margin
    lefts = _offsets(centre_cols, widths) + margin
    for k, i in enumerate(found):
        frames[i, tops[k] : tops[k] + heights[k], lefts[k] : lefts[k] + widths[k]] = fitted[k]
    return frames


def _offsets(centres: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """`_place`'s offsets in the MNIST frame (Python's round and NumPy's both round half to even)."""
    return np.minimum(np.maximum(np.round(MNIST_FRAME / 2 - centres), 0), MNIST_FRAME - lengths).astype(int)


def _light_on_dark(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`light_on_dark` of each picture (a uint8 ring's sum is exact in float64, so its mean is too),
    and the borders of the pictures it returns."""
    border = border_pixels(stack)
    inverted = (border.mean(axis=1) > 127.5)[:, None]
    return np.where(inverted[:, :, None], 255 - stack, stack), np.where(inverted, 255 - border, border)


def _levels_below(cumulative: np.ndarray, fractions: tuple[float, ...]) -> np.ndarray:
    """`_levels_at` of each row of cumulative histograms [N, 256]: int [N, len(fractions)] (its
    searchsorted, which costs less on one histogram, counted so that a stack takes one call)."""
    targets = np.asarray(fractions)[None, :] * cumulative[:, -1:]
    # searchsorted(cumulative, target) (side "left") is the number of entries below the target
    return (cumulative[:, None, :] < targets[:, :, None]).sum(axis=2)


def _ink_signals(stack: np.ndarray, border: np.ndarray) -> np.ndarray:
    """`_ink_signal` of each picture, its flat-page branch (every picture here is small): float32 [N, h, w].
    The pictures' histograms and their borders' in one bincount: [2N, 256]."""
    count = len(stack)
    offsets = (np.arange(2 * count) * 256)[:, None]
    values = np.concatenate([(stack.reshape(count, -1) + offsets[:count]).ravel(), (border + offsets[count:]).ravel()])
    cumulative = np.cumsum(np.bincount(values, minlength=512 * count).reshape(2 * count, 256), axis=1)
    low, high = _levels_below(cumulative[:count], (0.005, 0.995)).T
    paper = _levels_below(cumulative[count:], (0.5,))[:, 0]
    dark_ink = paper - low > high - paper
    residual = stack.astype(np.float32) - paper.astype(np.float32)[:, None, None]
    return np.maximum(np.where(dark_ink[:, None, None], -residual, residual), 0.0)


def _otsus(signals: np.ndarray) -> np.ndarray:
    """`_otsu` of each picture, the same arithmetic per row: float64 [N]; 0 where a picture has a
    single level (no ink to split). `_otsu` stays its own: this costs 6 us more on one picture."""
    count = len(signals)
    offsets = (np.arange(count) * 256)[:, None]
    levels8 = np.clip(signals, 0, 255).astype(np.uint8).reshape(count, -1)
    counts = np.bincount((levels8 + offsets).ravel(), minlength=256 * count).reshape(count, 256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    weight = np.cumsum(counts, axis=1)
    mass = np.cumsum(counts * levels, axis=1)
    total, total_mass = weight[:, -1:], mass[:, -1:]
    spread = weight * (total - weight)
    splits = spread[:, :-1] > 0
    between = np.divide((total_mass * weight[:, :-1] - total * mass[:, :-1]) ** 2, spread[:, :-1],
                        out=np.full((count, 255), -np.inf), where=splits)
    return np.where(splits.any(axis=1), np.argmax(between, axis=1) + 0.5, 0.0)


def _quantiles(signals: np.ndarray, keep: np.ndarray, q: float) -> np.ndarray:
    """`_quantile(signal[keep], q)` of each picture (float32 [N]); each picture keeps at least one pixel."""
    count = len(signals)
    flat = np.where(keep, signals, np.float32(np.inf)).reshape(count, -1)
    flat.sort(axis=1)
    sizes = keep.reshape(count, -1).sum(axis=1)
    index = (sizes - 1) * q
    low = index.astype(np.int64)
    high = np.minimum(low + 1, sizes - 1)
    rows = np.arange(count)
    a, b, t = flat[rows, low], flat[rows, high], index - low
    # the scalar code's Python float weights become float32 in float32 arithmetic (NumPy's weak scalars)
    return np.where(t >= 0.5, b - (b - a) * (1 - t).astype(np.float32), a + (b - a) * t.astype(np.float32))


def _find_inks(stack: np.ndarray, border: np.ndarray) -> list[np.ndarray | None]:
    """`find_ink` of each light-on-dark small picture of a uint8 [N, h, w] stack, given their borders
    [N, ring] (None where blank)."""
    count, height, width = stack.shape
    signals = _ink_signals(stack, border)
    inky = signals.reshape(count, -1).max(axis=1) >= MIN_INK_CONTRAST
    # an inky picture has two levels at least (its border's median level is 0), so Otsu's splits it
    thresholds = np.maximum(_otsus(signals), MIN_INK_CONTRAST / 2)
    masks = (signals > thresholds.astype(np.float32)[:, None, None]) & inky[:, None, None]

    # `_main_ink`: a picture whose ink is one piece keeps its mask; the others take its rules. The
    # stack's labels run in scan order, picture by picture: each picture's pieces are the labels
    # above the largest of the pictures before it, up to its own largest.
    labels, _ = ndimage.label(masks, structure=PLANE_BY_PLANE)
    largest = labels.reshape(count, -1).max(axis=1)
    has_ink = largest > 0
    one_piece = has_ink & (largest - np.concatenate([[0], np.maximum.accumulate(largest)[:-1]]) == 1)
    blank = ~inky | ~has_ink
    keep = masks | blank[:, None, None]  # a blank picture keeps every pixel: its values are not used
    for i in np.flatnonzero(~blank & ~one_piece):
        keep[i] = _main_ink(signals[i], masks[i], touching_edge_is_page=False)

    peaks = _quantiles(signals, keep, 0.99).astype(np.float64)
    floors = thresholds / 3  # below this it is paper texture and noise, above it anti-aliased ink edges
    scales = 255.0 / np.maximum(peaks - floors, 1.0)
    near_ink = _dilate(keep, iterations=max(1, round(max(height, width) / 100)))
    values = np.where(near_ink, (signals - floors.astype(np.float32)[:, None, None])
                      * scales.astype(np.float32)[:, None, None], 0.0)
    levels = np.rint(np.clip(values, 0, 255)).astype(np.uint8)
    top, bottom = _extent((values > 0).any(axis=2))
    left, right = _extent((values > 0).any(axis=1))
    return [None if blank[i] else levels[i, top[i] : bottom[i], left[i] : right[i]] for i in range(count)]


def _extent(lines: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first and one past the last True of each row of a bool [N, M] (0, 0 where none)."""
    first = np.argmax(lines, axis=1)
    end = lines.shape[1] - np.argmax(lines[:, ::-1], axis=1)
    return first, np.where(lines.any(axis=1), end, 0)
