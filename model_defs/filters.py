"""The array steps the canonicaliser is made of: a picture's border, reduction, histogram levels and
quantiles, Otsu's threshold, and the dilation, median, closing and opening the ink search uses.

They work on one picture or, where a stack of pictures can share the work, on each picture of a
[N, h, w] stack at once (on the last two axes); one picture is a stack of one. Those that SciPy or
NumPy also has are hand-written, bit for bit the library's, because the library costs several times
as much on our small pictures (its per-call setup is most of the work there); each says so, and
tests/unit/test_large_pictures.py and tests/unit/test_preprocessing.py check them against it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

LEVELS = np.arange(256, dtype=np.float64)


def border_pixels(pictures: np.ndarray) -> np.ndarray:
    """The outermost ring of pixels of a picture ([ring]), or of each picture of a [N, h, w] stack
    ([N, ring]); all the pixels of pictures 2 pixels or less a side."""
    height, width = pictures.shape[-2:]
    if min(height, width) <= 2:
        return pictures.reshape(*pictures.shape[:-2], height * width)
    return np.concatenate([pictures[..., 0, :], pictures[..., -1, :], pictures[..., 1:-1, 0],
                           pictures[..., 1:-1, -1]], axis=-1)


def stacked(planes: list[np.ndarray]) -> np.ndarray:
    """Planes of one shape as a [N, h, w] stack (a single plane as a stack of one, not copied)."""
    return planes[0][None] if len(planes) == 1 else np.stack(planes)


def reduce_to(gray: np.ndarray, side: int) -> np.ndarray:
    """A uint8 H x W picture box-averaged by the smallest integer factor that brings its long side
    to at most `side`."""
    factor = -(-max(gray.shape) // side)  # ceil
    return gray if factor <= 1 else np.asarray(Image.fromarray(gray).reduce(factor))


def histograms(levels: np.ndarray) -> np.ndarray:
    """How many pixels of each uint8 level each picture of a [N, ...] stack has: int [N, 256]."""
    count = len(levels)
    values = levels.reshape(count, -1)
    if count > 1:  # one bincount for the stack: each picture's levels in its own 256 bins
        values = values + (np.arange(count) * 256)[:, None]
    return np.bincount(values.ravel(), minlength=256 * count).reshape(count, 256)


def levels_at(levels: np.ndarray, fractions: Sequence[float]) -> np.ndarray:
    """The uint8 levels below which the given fractions of each picture's pixels lie (quantiles by
    histogram), for each picture of a uint8 [N, ...] stack: int [N, len(fractions)]."""
    cumulative = histograms(levels).cumsum(axis=1)
    count = len(cumulative)
    targets = np.asarray(fractions) * cumulative[:, -1:]
    if count == 1:  # searchsorted (side "left"): the number of counts below each target
        return np.searchsorted(cumulative[0], targets[0])[None]
    # one search over the stack: each picture's counts lifted above all the counts before them, its
    # targets with them (a whole count is below t exactly when it is below ceil(t), and whole numbers
    # lift exactly)
    lift = np.arange(count)[:, None] * (int(cumulative[:, -1].max()) + 1)
    found = np.searchsorted((cumulative + lift).ravel(), (np.ceil(targets) + lift).ravel()).reshape(count, -1)
    return found - np.arange(count)[:, None] * 256


def quantiles(values: np.ndarray, keep: np.ndarray | None, fractions: Sequence[float]) -> list[list]:
    """np.percentile(values[i][keep[i]], 100 * f) for each picture i of a [N, ...] stack (all of
    its values when `keep` is None) and each fraction f, bit for bit (NumPy scalars of the values'
    dtype): N lists of len(fractions). Every picture keeps at least one value.

    Hand-written: np.percentile's per-call overhead is most of its cost on a picture's values."""
    count = len(values)
    if count == 1:  # one picture: a copy of its (kept) values, ordered only at the ranks it needs
        row = values.ravel().copy() if keep is None else values[keep]
        ranks = [(row.size - 1) * fraction for fraction in fractions]
        lows = [int(rank) for rank in ranks]
        row.partition(lows + [min(low + 1, row.size - 1) for low in lows])
        return [[_interpolate(row, row.size, rank) for rank in ranks]]
    if keep is None:
        rows, sizes = np.sort(values.reshape(count, -1), axis=1), [values[0].size] * count
    else:  # each picture's kept values first in its sorted row, the others last as +inf
        rows = np.sort(np.where(keep, values, values.dtype.type(np.inf)).reshape(count, -1), axis=1)
        sizes = keep.reshape(count, -1).sum(axis=1).tolist()
    return [[_interpolate(rows[i], sizes[i], (sizes[i] - 1) * fraction) for fraction in fractions]
            for i in range(count)]


def _interpolate(ordered: np.ndarray, size: int, index: float):
    """NumPy's linear-interpolation quantile at fractional rank `index` of the first `size` values of
    a row ordered at that rank, in their dtype (its Python float weight cast to it, as NumPy casts
    a Python float)."""
    low = int(index)
    a, b, t = ordered[low], ordered[min(low + 1, size - 1)], index - low
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t


def otsu(counts: np.ndarray) -> np.ndarray:
    """Otsu's threshold of each of a stack's histograms of 256 levels [N, 256] (the level that best
    splits ink from paper): float [N]; 0 where a picture has a single level (nothing to split).

    Hand-written: scikit-image's threshold_otsu finds the same levels, one picture a call."""
    counts = counts.astype(np.float64)
    weight = counts.cumsum(axis=1)
    mass = (counts * LEVELS).cumsum(axis=1)
    total, total_mass = weight[:, -1:], mass[:, -1:]
    weight, mass = weight[:, :-1], mass[:, :-1]  # the splits: below each level but the last
    spread = weight * (total - weight)  # 0 where one class is empty: no split there
    splits = spread > 0
    between = np.divide((total_mass * weight - total * mass) ** 2, spread,
                        out=np.full(spread.shape, -np.inf), where=splits)
    # the first level of the largest between-class variance among the levels that split
    return np.where(splits.any(axis=1), between.argmax(axis=1) + 0.5, 0.0)


def dilate(mask: np.ndarray, iterations: int) -> np.ndarray:
    """ndimage.binary_dilation(mask, iterations=iterations) with its 4-connected cross and nothing
    outside the picture, of a picture or each picture of a [N, h, w] stack, by shifted ORs.

    Hand-written: SciPy's costs several times this on a digit's mask, and far more on a stack."""
    grown = mask
    for _ in range(iterations):
        step = grown.copy()
        step[..., 1:, :] |= grown[..., :-1, :]
        step[..., :-1, :] |= grown[..., 1:, :]
        step[..., 1:] |= grown[..., :-1]
        step[..., :-1] |= grown[..., 1:]
        grown = step
    return grown


def median_filter(picture: np.ndarray, size: int) -> np.ndarray:
    """ndimage.median_filter(picture, size=size, mode="nearest") of a uint8 H x W picture, by
    partitioning its size x size windows as int16.

    Hand-written: SciPy's costs several times this on a photo's polarity grid; numpy partitions
    int16 rows several times faster than uint8 ones."""
    padded = np.pad(picture, size // 2, mode="edge").astype(np.int16)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size)).reshape(*picture.shape, size * size)
    if not windows.flags.writeable:  # the reshape kept a read-only view (tiny pictures) instead of copying
        windows = windows.copy()
    middle = size * size // 2
    windows.partition(middle, axis=-1)  # in place, on the reshape's copy
    return windows[..., middle].astype(np.uint8)


def closing(picture: np.ndarray, size: int) -> np.ndarray:
    """ndimage.grey_closing(picture, size=size, mode="nearest") of a uint8 H x W picture: the
    size x size maximum, then the minimum."""
    return _square(_square(picture, size, np.maximum), size, np.minimum)


def opening(picture: np.ndarray, size: int) -> np.ndarray:
    """ndimage.grey_opening(picture, size=size, mode="nearest"): the minimum, then the maximum."""
    return _square(_square(picture, size, np.minimum), size, np.maximum)


def _square(picture: np.ndarray, size: int, extreme: np.ufunc) -> np.ndarray:
    """`extreme` (np.maximum or np.minimum) over each size x size window, edges repeated, as two 1-D
    passes.

    Hand-written: SciPy's grey filters (and its 1-D minimum and maximum filters) cost twice this
    on the lighting grid."""
    return _running(_running(picture, size, extreme, axis=1), size, extreme, axis=0)


def _running(picture: np.ndarray, size: int, extreme: np.ufunc, axis: int) -> np.ndarray:
    """`extreme` over `size` consecutive pixels along `axis` (odd size, edges repeated), by doubling:
    spans of 1, 2, 4, ... pixels, then two overlapping spans cover the window (max and min allow overlap)."""
    pad = [(0, 0), (0, 0)]
    pad[axis] = (size // 2, size // 2)
    span = np.pad(picture, pad, mode="edge")
    take = (lambda a, start, n: a[start:start + n]) if axis == 0 else (lambda a, start, n: a[:, start:start + n])
    width = 1
    while 2 * width <= size:
        n = span.shape[axis] - width
        span = extreme(take(span, 0, n), take(span, width, n))
        width *= 2
    return extreme(take(span, 0, picture.shape[axis]), take(span, size - width, picture.shape[axis]))
