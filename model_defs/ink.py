"""Finding a digit's ink on a page, for a stack of pictures of one shape at a time (one picture is a
stack of one): scans, canvas drawings and phone photos alike.

For each light-on-dark picture: the page's lighting is subtracted (its level when the border is
flat, else a morphological estimate of the page on a coarse grid, so gradients and shadows go), the
ink is thresholded (Otsu) and only the digit's connected pieces are kept (specks, faint shadow rims
and page edges go). The steps run as whole-stack NumPy calls; what is one picture's own (the
lighting of an unevenly lit page, the rules for ink in several pieces) runs picture by picture.
"""
from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from model_defs.filters import (
    border_pixels,
    closing,
    dilate,
    histograms,
    levels_at,
    median_filter,
    opening,
    otsu,
    quantiles,
    reduce_to,
    stacked,
)

FLAT_PAGE_SIDE = 56        # pictures under two MNIST frames a side are a flat page (a scan or a drawing)
FLAT_BORDER = 0.15         # border spread (p5..p95) under this fraction of the contrast: a flat page
BACKGROUND_GRID = 160      # the lighting is estimated on a picture of at most this many pixels a side,
POLARITY_GRID = 32         # the ink's polarity on one of at most this many (finer was wrong more often)
LIGHTING_WINDOW = 5        # the lighting window is this fraction of the grid: wider than a stroke
MIN_INK_CONTRAST = 24      # grey levels: fainter than this over the background is no ink at all
MIN_PART = 0.08            # a piece of ink smaller than this fraction of the largest is a speck
NEAR = 0.5                 # pieces further than this many digit sizes from the largest are not the digit
PAGE_SIDE = 100            # on pictures this large, ink along the edge is the page's edge or a shadow:
FAINT = 0.5                # a piece whose mean is under this fraction of the ink's (p90) is not ink
EDGE_CONTACT = 0.3         # ... a piece whose contact with the edge is over this fraction of its size

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)  # ink pieces touching at a corner are one piece


def find_inks(pictures: np.ndarray) -> list[np.ndarray | None]:
    """The digit's ink in each light-on-dark picture of a uint8 [N, h, w] stack, as light-on-dark
    uint8 cropped to it, background and specks removed; None where a picture has no ink."""
    count, height, width = pictures.shape
    signals = _ink_signals(pictures)
    counts = histograms(signals.astype(np.uint8))  # the signals lie in [0, 256): the cast floors them
    # a picture whose ink does not stand out of the paper has none: nothing is above an infinite threshold
    thresholds = [max(split, MIN_INK_CONTRAST / 2) if inky else np.inf
                  for split, inky in zip(otsu(counts).tolist(), counts[:, MIN_INK_CONTRAST:].any(axis=1).tolist())]
    masks = signals > per_picture(thresholds)
    keep, blank = _main_inks(signals, masks, touching_edge_is_page=min(height, width) >= PAGE_SIDE)
    if all(blank):
        return [None] * count
    peaks = [float(peak[0]) for peak in quantiles(signals, keep, (0.99,))]
    floors = [threshold / 3 for threshold in thresholds]  # below: paper texture and noise; above: ink edges
    scales = [255.0 / max(peak - floor, 1.0) for peak, floor in zip(peaks, floors)]
    near_ink = dilate(keep, iterations=max(1, round(max(height, width) / 100)))
    return _crop(np.where(near_ink, (signals - per_picture(floors)) * per_picture(scales), 0.0), blank)


def per_picture(values: list[float]) -> np.ndarray:
    """One number per picture of a stack as float32 [N, 1, 1], to broadcast over its pictures (a
    Python float meets float32 pixels cast so, as NumPy casts a Python scalar)."""
    return np.array(values, dtype=np.float32)[:, None, None]


def _crop(values: np.ndarray, blank: list[bool]) -> list[np.ndarray | None]:
    """Each picture's float values as uint8 levels, cropped to where they are positive (None where blank)."""
    count, height, width = values.shape
    positive = values > 0
    rows, cols = positive.any(axis=2), positive.any(axis=1)
    tops, lefts = rows.argmax(axis=1).tolist(), cols.argmax(axis=1).tolist()
    bottoms = (height - rows[:, ::-1].argmax(axis=1)).tolist()
    rights = (width - cols[:, ::-1].argmax(axis=1)).tolist()
    # rounded once over the box around every picture's ink (all of a blank one), then cut to each one's
    top, bottom, left, right = min(tops), max(bottoms), min(lefts), max(rights)
    levels = np.rint(np.minimum(np.maximum(values[:, top:bottom, left:right], 0), 255)).astype(np.uint8)
    return [None if blank[i] else levels[i, tops[i] - top : bottoms[i] - top, lefts[i] - left : rights[i] - left]
            for i in range(count)]


def _ink_signals(pictures: np.ndarray) -> np.ndarray:
    """float32 ink strength (0 = paper) of each picture of a uint8 [N, h, w] stack, the polarity
    made light-on-dark."""
    count, height, width = pictures.shape
    low, high = levels_at(pictures, (0.005, 0.995)).T.tolist()
    spread_low, paper, spread_high = levels_at(border_pixels(pictures), (0.05, 0.5, 0.95)).T.tolist()
    # a small picture is a flat page; so is one whose border is even against its contrast
    flat = [min(height, width) < FLAT_PAGE_SIDE or top - bottom <= FLAT_BORDER * (h - lo)
            for bottom, top, lo, h in zip(spread_low, spread_high, low, high)]
    # on a flat page the ink is the far side from the paper's level
    sides = [-1.0 if p - lo > h - p else 1.0 for p, lo, h in zip(paper, low, high)]
    if all(flat):
        return _beyond(pictures, paper, sides)
    signals = [_beyond(pictures[i : i + 1], paper[i : i + 1], sides[i : i + 1])[0] if flat[i]
               else _lit_signal(pictures[i]) for i in range(count)]
    return stacked(signals)


def _beyond(pictures: np.ndarray, paper: list[int], sides: list[float]) -> np.ndarray:
    """How far each picture's levels lie beyond its paper's level on its ink's side (-1: darker,
    1: lighter), in float32; 0 on the paper's side."""
    level = per_picture(paper)
    if len(set(sides)) > 1:  # inks of both sides in the stack
        return np.maximum(np.subtract(pictures, level, dtype=np.float32) * per_picture(sides), 0.0)
    if sides[0] < 0:
        return np.maximum(np.subtract(level, pictures, dtype=np.float32), 0.0)
    return np.maximum(np.subtract(pictures, level, dtype=np.float32), 0.0)


def _lit_signal(gray: np.ndarray) -> np.ndarray:
    """float32 ink strength of an unevenly lit picture, against the page's brightness around it."""
    levels = gray.astype(np.float32)
    dark_ink, page = _lighting(gray)
    if dark_ink:  # ink reflects a fraction of the light the page gets: the same in shadow and sun
        return np.maximum((page - levels) * (255.0 / np.maximum(page, 1.0)), 0.0)
    return np.maximum(levels - page, 0.0)


def _lighting(gray: np.ndarray) -> tuple[bool, np.ndarray]:
    """(whether the ink is dark, the page's brightness without the ink) of an unevenly lit picture.

    The ink's polarity: the side on which a coarse picture strays further from its local median.
    The page: morphological closing (for dark ink; opening for light ink) over windows wider than
    a stroke, on a finer grid; it removes the ink and keeps the page, even inside a bold digit.
    """
    coarse = reduce_to(gray, POLARITY_GRID)
    stray = coarse.astype(np.float32) - median_filter(coarse, _window(coarse))
    low, high = quantiles(stray[None], None, (0.005, 0.995))[0]
    dark_ink = bool(-low > high)
    small = reduce_to(gray, BACKGROUND_GRID)
    window = _window(small)
    page = closing(small, window) if dark_ink else opening(small, window)
    page = ndimage.uniform_filter(page.astype(np.float32), size=window // 2 | 1, mode="nearest")
    return dark_ink, np.asarray(Image.fromarray(page, mode="F").resize(gray.shape[::-1], Image.Resampling.BILINEAR))


def _window(picture: np.ndarray) -> int:
    """The lighting's window on a grid: odd, a fixed fraction of the picture, wider than a stroke."""
    return max(3, max(picture.shape) // LIGHTING_WINDOW) | 1


def _main_inks(signals: np.ndarray, masks: np.ndarray, touching_edge_is_page: bool) -> tuple[np.ndarray, list[bool]]:
    """The digit's pieces of ink in each picture of a stack (bool [N, h, w]) and whether each has
    none. A picture whose ink is one piece keeps it; the others go by `_main_ink`."""
    count, height, width = masks.shape
    labels, firsts, lasts = _labels(masks)
    keep = [np.ones((height, width), dtype=bool) if last == first  # no ink: its values are not used
            else masks[i] if last - first == 1
            else _main_ink(signals[i], masks[i], labels[i], first, last - first, touching_edge_is_page)
            for i, (first, last) in enumerate(zip(firsts, lasts))]
    return stacked(keep), [last == first for first, last in zip(firsts, lasts)]


def _labels(masks: np.ndarray) -> tuple[np.ndarray, list[int], list[int]]:
    """The 8-connected pieces of each mask of a stack, numbered in scan order across the stack
    (int [N, h, w]), and each picture's pieces: the numbers above firsts[i], up to lasts[i].

    The masks are labelled as one picture, a blank row between each two of them so that no piece
    joins pictures (SciPy labels a picture faster than a stack of planes)."""
    count, height, width = masks.shape
    if count == 1:
        labels, total = ndimage.label(masks[0], structure=EIGHT_CONNECTED)
        return labels[None], [0], [total]
    apart = np.zeros((count, height + 1, width), dtype=bool)
    apart[:, :height] = masks
    labels, _ = ndimage.label(apart.reshape(-1, width), structure=EIGHT_CONNECTED)
    labels = labels.reshape(count, height + 1, width)[:, :height]
    lasts = np.maximum.accumulate(labels.max(axis=(1, 2))).tolist()
    return labels, [0, *lasts[:-1]], lasts


def _main_ink(signal: np.ndarray, mask: np.ndarray, labels: np.ndarray, first: int, count: int,
              touching_edge_is_page: bool) -> np.ndarray:
    """The digit's pieces of one picture whose ink is `count` pieces (labelled first + 1 to
    first + count): the largest connected piece and the sizeable ones near it.

    Pieces much fainter than the ink (the rim of a hard shadow the lighting estimate could not
    follow) are not ink; nor, on large pictures, are pieces lying along the picture's edge.
    """
    if first:  # its pieces numbered from 1
        labels = np.where(mask, labels - first, 0)
    # counted over the ink only (the same sums in the same order as over the whole picture, without
    # the paper's label 0)
    pieces, ink = labels[mask], signal[mask]
    areas = np.bincount(pieces, minlength=count + 1)[1:]
    contrast = np.bincount(pieces, weights=ink, minlength=count + 1)[1:] / areas
    candidates = np.flatnonzero(contrast >= FAINT * quantiles(ink[None], None, (0.9,))[0][0])
    if not len(candidates):  # every piece faint against the ink's p90: a few bright pixels inside a
        candidates = np.arange(count)  # faint stroke, which is the digit
    boxes = ndimage.find_objects(labels)
    if touching_edge_is_page:  # a page edge or shadow runs along the edge; a digit only ends there
        edge = np.bincount(border_pixels(labels), minlength=count + 1)
        extent = np.array([max(r.stop - r.start, c.stop - c.start) for r, c in boxes])
        inside = candidates[(edge[1:] <= EDGE_CONTACT * extent)[candidates]]
        candidates = inside if len(inside) else candidates
    main = candidates[np.argmax(areas[candidates])]
    rows, cols = boxes[main]
    reach = NEAR * max(rows.stop - rows.start, cols.stop - cols.start)
    kept = [i for i in candidates if areas[i] >= MIN_PART * areas[main]
            and boxes[i][0].start < rows.stop + reach and boxes[i][0].stop > rows.start - reach
            and boxes[i][1].start < cols.stop + reach and boxes[i][1].stop > cols.start - reach]
    if len(kept) == count:  # every piece: the mask itself (what is_kept[labels] gives, without the lookup)
        return mask
    is_kept = np.zeros(count + 1, dtype=bool)
    is_kept[np.asarray(kept) + 1] = True
    return is_kept[labels]
