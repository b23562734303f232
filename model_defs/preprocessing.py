"""Where an image becomes the model's canonical input: one function, used for training and serving.

`canonicalize(image, spec)` turns any decoded picture (a PIL image or a 2-D array) into the
canonical uint8 H x W array the exported model takes: light content on a dark background,
0..255, framed the way the training data were. The training data sets go through this very
function (see pipeline/datasets.py), and so does every request the handler serves, so there is no
train/serve skew by construction.

Rules, in order:
1. Grayscale: transparency (an alpha channel, or a PNG's transparent colour key in any mode,
   1-bit and 16-bit included) is composited onto white, 16-bit samples are scaled to 8 bits,
   colour is converted with ITU-R 601-2 luma (PIL's "L"). Pictures over 1024 pixels a side are
   box-reduced by an integer factor (the content ends up 20 pixels tall anyway).
2. Polarity: if the border of the picture is brighter than mid-grey the picture is dark-on-light
   (ink on paper, a product on a white page) and is inverted.
3. Already canonical (exactly the model's H x W after steps 1-2): returned unchanged, so the
   canonicaliser is idempotent and a canonical image sent as PNG reaches the model bit for bit.
4. Otherwise the content is found and framed:
   - "digit": on the picture box-resized to DIGIT_WORKING_SIDE a side when larger (a large JPEG
     arrives decoded at a reduced scale that keeps at least that, handlers/image_decoding.py), the
     ink is found as on a photographed page (`find_ink`): the page's lighting is removed (its
     level when the border is flat, else a morphological closing on a coarse grid, so gradients
     and shadows go), the ink is thresholded (Otsu) and only the digit's connected
     pieces are kept (specks, faint shadow rims and page edges go). Then MNIST's convention:
     fitted into a 20x20 box keeping aspect ratio and placed in a 28x28 frame so that its centre
     of mass is at the centre; LeNet-5's 32x32 input is that 28x28 frame with a 2-pixel black
     margin (as LeCun et al. padded MNIST for LeNet-5).
   - "fashion": the background level (border median) is subtracted, contrast stretched, the
     content cropped, then Fashion-MNIST's convention: longest side resized to 28 keeping aspect
     ratio, centred in the 28x28 frame.
"""
from __future__ import annotations

from typing import Union

import numpy as np
from PIL import Image
from scipy import ndimage

ImageLike = Union[Image.Image, np.ndarray]

MNIST_FRAME = 28      # MNIST's canonical frame
MNIST_DIGIT_BOX = 20  # MNIST digits are fitted into a 20x20 box inside the frame
CONTENT_THRESHOLD = 0.1  # a pixel is content when brighter than 10% of the brightest pixel
WORKING_SIDE = 1024      # larger pictures are box-reduced to at most this many pixels a side first


# Modes whose transparency is an alpha channel, and grey modes whose transparency is one sample
# value (a PNG tRNS colour key in info["transparency"]: 1-bit, 8-bit and 16-bit greyscale PNGs).
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
KEYED_GREY_MODES = ("1", "L", "I", "I;16", "I;16B", "I;16L", "I;16N")


def to_grayscale(image: ImageLike) -> np.ndarray:
    """Any PIL image (or 2-D array) as a uint8 H x W array, transparency composited on white."""
    if isinstance(image, np.ndarray):
        if image.ndim != 2:
            raise ValueError(f"expected a 2-D grayscale array, got shape {image.shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 array, got {image.dtype}")
        return image
    if image.mode == "La":  # premultiplied alpha: PIL converts it only to LA
        image = image.convert("LA")
    if image.mode in ALPHA_MODES or (image.mode in ("P", "RGB") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("L"), dtype=np.uint8)
    gray = _grey_levels(image)
    key = image.info.get("transparency")
    if image.mode in KEYED_GREY_MODES and isinstance(key, int):
        gray = np.where(np.asarray(image) == key, np.uint8(255), gray)  # composited on white
    return gray


def _grey_levels(image: Image.Image) -> np.ndarray:
    """uint8 grey levels of an image without alpha: 16-bit and float samples scaled, colour as
    ITU-R 601-2 luma."""
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        samples = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I") else 1.0
        if image.mode == "I" and samples.max(initial=0) <= 255:
            peak = 255.0
        return np.clip(np.rint(samples * (255.0 / peak)), 0, 255).astype(np.uint8)
    return np.asarray(image.convert("L"), dtype=np.uint8)


def reduce_large(gray: np.ndarray) -> np.ndarray:
    """Box-average pictures larger than WORKING_SIDE a side by an integer factor.

    The content ends up 20-28 pixels tall, so a 1200x900 photo loses nothing that matters, and a
    12-megapixel one costs milliseconds instead of a second of float arithmetic.
    """
    return _reduce_to(gray, WORKING_SIDE)


def border_pixels(gray: np.ndarray) -> np.ndarray:
    """The outermost ring of pixels of a 2-D array; of each picture of a [N, h, w] stack ([N, ring])
    when its pictures are over 2 pixels a side."""
    if gray.ndim == 2 and min(gray.shape) <= 2:
        return gray.ravel()
    return np.concatenate([gray[..., 0, :], gray[..., -1, :], gray[..., 1:-1, 0], gray[..., 1:-1, -1]], axis=-1)


def light_on_dark(gray: np.ndarray) -> np.ndarray:
    """Invert a dark-on-light picture so that content is light on a dark background."""
    if border_pixels(gray).mean() > 127.5:
        return 255 - gray
    return gray


def _stretch_and_crop(gray: np.ndarray) -> np.ndarray | None:
    """Subtract the background, stretch to 0..255 and crop to the content; None when blank."""
    background = float(np.median(border_pixels(gray)))
    signal = gray.astype(np.float64) - background
    peak = signal.max(initial=0.0)
    if peak <= 0:
        return None
    stretched = np.clip(signal * (255.0 / peak), 0, 255)
    rows = np.flatnonzero((stretched > CONTENT_THRESHOLD * 255).any(axis=1))
    cols = np.flatnonzero((stretched > CONTENT_THRESHOLD * 255).any(axis=0))
    cropped = stretched[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return np.rint(cropped).astype(np.uint8)


def _fit(content: np.ndarray, box: int) -> np.ndarray:
    """Resize so that the longest side is `box`, keeping the aspect ratio."""
    h, w = content.shape
    scale = box / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return content
    return np.asarray(Image.fromarray(content).resize(size, Image.Resampling.LANCZOS))


def _place(content: np.ndarray, frame: int, centre: tuple[float, float], margin: int = 0) -> np.ndarray:
    """Put `content` into a black frame x frame area with `centre` (row, col) at its middle; the
    canvas has `margin` more black pixels on every side."""
    h, w = content.shape
    top = min(max(round(frame / 2 - centre[0]), 0), frame - h) + margin
    left = min(max(round(frame / 2 - centre[1]), 0), frame - w) + margin
    canvas = np.zeros((frame + 2 * margin, frame + 2 * margin), dtype=np.uint8)
    canvas[top : top + h, left : left + w] = content
    return canvas


def centre_of_mass(content: np.ndarray) -> tuple[float, float]:
    """(row, col) of the intensity-weighted centre, in pixel-area coordinates (+0.5)."""
    weights = content.astype(np.float64)
    row_mass = weights.sum(axis=1)
    total = row_mass.sum()
    if total == 0:
        return (content.shape[0] / 2, content.shape[1] / 2)
    col_mass = weights.sum(axis=0)
    return (float(row_mass @ np.arange(len(row_mass))) / total + 0.5,
            float(col_mass @ np.arange(len(col_mass))) / total + 0.5)


def frame_digit(gray: np.ndarray, margin: int = 0) -> np.ndarray:
    """MNIST framing of the ink: a 20x20 box, centred by centre of mass in 28x28 (plus `margin` a side)."""
    content = find_ink(gray)
    if content is None:
        return np.zeros((MNIST_FRAME + 2 * margin,) * 2, dtype=np.uint8)
    fitted = _fit(content, MNIST_DIGIT_BOX)
    return _place(fitted, MNIST_FRAME, centre_of_mass(fitted), margin)


# ---- finding the ink of a digit on a page -------------------------------------------------------
DIGIT_WORKING_SIDE = 240   # larger pictures are box-resized to this a side first (photos: 5,988, 3 seeds,
                           # errors lenet5/mnist_net 109/113 at 240, 105/118 at 320, 117/108 at 160)
FLAT_BORDER = 0.15         # border spread (p5..p95) under this fraction of the contrast: a flat page
BACKGROUND_GRID = 160      # the lighting is estimated on a picture of at most this many pixels a side,
POLARITY_GRID = 32         # ... the ink's polarity on one of at most this many (7,058 photos, 3 renders:
                           # polarity wrong on 16 at 32, 20 at 64; its median filter 75 us, 594 at 64)
LIGHTING_WINDOW = 5         # the lighting window is this fraction of the grid: wider than a stroke
MIN_INK_CONTRAST = 24      # grey levels: fainter than this over the background is no ink at all
MIN_PART = 0.08            # a piece of ink smaller than this fraction of the largest is a speck
NEAR = 0.5                 # pieces further than this many digit sizes from the largest are not the digit
PAGE_SIDE = 100            # on pictures this large, ink along the edge is the page's edge or a shadow:
FAINT = 0.5                # a piece whose mean is under this fraction of the ink's (p90) is not ink
EDGE_CONTACT = 0.3         # ... a piece whose contact with the edge is over this fraction of its size


def find_ink(gray: np.ndarray) -> np.ndarray | None:
    """The digit's ink as light-on-dark uint8, cropped to it, background and specks removed; None when blank.

    Works on scans, canvas drawings and phone photos alike: the lighting is subtracted (a flat
    page's level, or a large-scale median estimate when the page is unevenly lit), the ink is
    thresholded (Otsu), and only the main connected pieces of ink are kept (specks, page edges
    and far-away marks are dropped).
    """
    gray = shrink_to(gray, DIGIT_WORKING_SIDE)
    signal = _ink_signal(gray)
    if signal.max(initial=0.0) < MIN_INK_CONTRAST:
        return None
    threshold = max(_otsu(signal), MIN_INK_CONTRAST / 2)
    keep = _main_ink(signal, signal > threshold, touching_edge_is_page=min(gray.shape) >= PAGE_SIDE)
    if keep is None:
        return None
    peak = float(_quantile(signal[keep], 0.99))
    floor = threshold / 3  # below this it is paper texture and noise, above it anti-aliased ink edges
    near_ink = _dilate(keep, iterations=max(1, round(max(gray.shape) / 100)))
    values = np.where(near_ink, (signal - floor) * (255.0 / max(peak - floor, 1.0)), 0.0)
    positive = values > 0
    rows = np.flatnonzero(positive.any(axis=1))
    cols = np.flatnonzero(positive.any(axis=0))
    cropped = values[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return np.rint(np.clip(cropped, 0, 255)).astype(np.uint8)


def _dilate(mask: np.ndarray, iterations: int) -> np.ndarray:
    """ndimage.binary_dilation(mask, iterations=iterations) with its default cross (4-connected)
    element and nothing outside the picture, bit for bit, by shifted ORs: 3 us instead of 23 on a
    28x28 digit (scipy's setup, not the work, was the cost; tests/unit/test_canonical_identity.py).
    On the last two axes, so a [N, h, w] stack dilates picture by picture."""
    grown = mask
    for _ in range(iterations):
        step = grown.copy()
        step[..., 1:, :] |= grown[..., :-1, :]
        step[..., :-1, :] |= grown[..., 1:, :]
        step[..., 1:] |= grown[..., :-1]
        step[..., :-1] |= grown[..., 1:]
        grown = step
    return grown


def shrink_to(gray: np.ndarray, side: int) -> np.ndarray:
    """A uint8 H x W picture larger than `side` a side, box-resized so that its long side is `side`
    (the aspect ratio kept); smaller pictures unchanged. A 640x480 photo: 240x180, its digit 52-98 px."""
    height, width = gray.shape
    if max(height, width) <= side:
        return gray
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(gray).resize(size, Image.Resampling.BOX))


def _reduce_to(gray: np.ndarray, side: int) -> np.ndarray:
    """Box-average by the smallest integer factor that brings the long side to at most `side`."""
    factor = -(-max(gray.shape) // side)  # ceil
    return gray if factor <= 1 else np.asarray(Image.fromarray(gray).reduce(factor))


def _ink_signal(gray: np.ndarray) -> np.ndarray:
    """float32 ink strength (0 = paper) with the polarity made light-on-dark."""
    low, high = _levels_at(gray, (0.005, 0.995))
    border = border_pixels(gray)
    spread_low, paper, spread_high = _levels_at(border, (0.05, 0.5, 0.95))
    levels = gray.astype(np.float32)
    if min(gray.shape) < 2 * MNIST_FRAME or spread_high - spread_low <= FLAT_BORDER * (high - low):
        dark_ink = paper - low > high - paper  # a flat page: the ink is the far side from its level
        residual = levels - np.float32(paper)
    else:
        dark_ink, page = _lighting(gray)
        if dark_ink:  # ink reflects a fraction of the light the page gets: the same in shadow and sun
            return np.maximum((page - levels) * (255.0 / np.maximum(page, 1.0)), 0.0)
        residual = levels - page
    return np.maximum(-residual if dark_ink else residual, 0.0)


def _levels_at(values: np.ndarray, fractions: tuple[float, ...]) -> list[int]:
    """The uint8 levels below which the given fractions of `values` lie (quantiles, by histogram)."""
    cumulative = np.cumsum(np.bincount(values.ravel(), minlength=256))
    return [int(level) for level in np.searchsorted(cumulative, np.asarray(fractions) * cumulative[-1])]


def _lighting(gray: np.ndarray) -> tuple[bool, np.ndarray]:
    """(whether the ink is dark, the page's brightness without the ink) of an unevenly lit picture.

    The ink's polarity: the side on which a coarse picture strays further from its local median.
    The page: morphological closing (for dark ink; opening for light ink) over windows wider than
    a stroke, on a finer grid; it removes the ink and keeps the page, even inside a bold digit.
    """
    coarse = _reduce_to(gray, POLARITY_GRID)
    stray = coarse.astype(np.float32) - _median_filter(coarse, _window(coarse))
    low, high = _quantile(stray.ravel(), 0.005), _quantile(stray.ravel(), 0.995)
    dark_ink = bool(-low > high)
    small = _reduce_to(gray, BACKGROUND_GRID)
    window = _window(small)
    page = _closing(small, window) if dark_ink else _opening(small, window)
    page = ndimage.uniform_filter(page.astype(np.float32), size=window // 2 | 1, mode="nearest")
    return dark_ink, np.asarray(Image.fromarray(page, mode="F").resize(gray.shape[::-1], Image.Resampling.BILINEAR))


def _median_filter(picture: np.ndarray, size: int) -> np.ndarray:
    """ndimage.median_filter(picture, size=size, mode="nearest") of a uint8 H x W picture, bit for
    bit, by partitioning its size x size windows as int16: 75 us instead of 433 on the 23x30 polarity
    grid of a photo, window 7 (594 instead of 5,046 on the 45x60 grid, window 13, of a 64 grid)
    (numpy partitions uint8 rows seven times slower than int16 ones)."""
    padded = np.pad(picture, size // 2, mode="edge").astype(np.int16)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size)).reshape(*picture.shape, size * size)
    if not windows.flags.writeable:  # the reshape kept a read-only view (tiny pictures) instead of copying
        windows = windows.copy()
    middle = size * size // 2
    windows.partition(middle, axis=-1)  # in place, on the reshape's copy: 0.58 ms instead of 1.04 for 45x60
    return windows[..., middle].astype(np.uint8)


def _closing(picture: np.ndarray, size: int) -> np.ndarray:
    """ndimage.grey_closing(picture, size=size, mode="nearest"), bit for bit: the size x size maximum,
    then the minimum (uint8 H x W in and out)."""
    return _square(_square(picture, size, np.maximum), size, np.minimum)


def _opening(picture: np.ndarray, size: int) -> np.ndarray:
    """ndimage.grey_opening(picture, size=size, mode="nearest"), bit for bit: the minimum, then the maximum."""
    return _square(_square(picture, size, np.minimum), size, np.maximum)


def _square(picture: np.ndarray, size: int, extreme: np.ufunc) -> np.ndarray:
    """`extreme` (np.maximum or np.minimum) over each size x size window, edges repeated: two 1-D passes
    of a few whole-array calls each, 0.13 ms for a closing of 120x160, window 33, where scipy took 0.35."""
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


def _window(picture: np.ndarray) -> int:
    """The lighting's window on a grid: odd, a fixed fraction of the picture, wider than a stroke."""
    return max(3, max(picture.shape) // LIGHTING_WINDOW) | 1


def _quantile(values: np.ndarray, q: float):
    """np.percentile(values, 100 * q) bit for bit (linear interpolation in the values' dtype, with a
    Python float weight, as numpy does it) from one partition: a tenth of its cost on small pictures."""
    index = (values.size - 1) * q
    low = int(index)
    high = min(low + 1, values.size - 1)
    part = np.partition(values, (low, high))
    a, b, t = part[low], part[high], index - low
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t


def _otsu(signal: np.ndarray) -> float:
    """Otsu's threshold of a 0..255 float picture (the level that best splits ink from paper)."""
    counts = np.bincount(np.clip(signal, 0, 255).astype(np.uint8).ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    weight = np.cumsum(counts)
    mass = np.cumsum(counts * levels)
    total, total_mass = weight[-1], mass[-1]
    spread = weight * (total - weight)  # 0 where one class is empty: no split there
    # the first level of the largest between-class variance among the levels that split (np.nanargmax
    # over NaN elsewhere gave the same level at three times the cost)
    splits = spread[:-1] > 0
    if not splits.any():
        raise ValueError("Otsu's threshold needs ink and paper; the picture has one level")  # as nanargmax raised
    between = np.divide((total_mass * weight[:-1] - total * mass[:-1]) ** 2, spread[:-1],
                        out=np.full(255, -np.inf), where=splits)
    return float(np.argmax(between)) + 0.5


def _main_ink(signal: np.ndarray, mask: np.ndarray, touching_edge_is_page: bool) -> np.ndarray | None:
    """The digit's pieces of ink: the largest connected piece and the sizeable ones near it.

    Pieces much fainter than the ink (the rim of a hard shadow the lighting estimate could not
    follow) are not ink; nor, on large pictures, are pieces lying along the picture's edge.
    """
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return None
    # counted over the ink only (the same sums in the same order as over the whole picture, without
    # the paper's label 0): 0.05 ms instead of 0.26 on a photo's 240x180 (medians of 300)
    pieces, ink = labels[mask], signal[mask]
    areas = np.bincount(pieces, minlength=count + 1)[1:]
    contrast = np.bincount(pieces, weights=ink, minlength=count + 1)[1:] / areas
    candidates = np.flatnonzero(contrast >= FAINT * _quantile(ink, 0.9))
    if not len(candidates):  # every piece faint against the ink's p90: a few bright pixels inside a
        candidates = np.arange(count)  # faint stroke, which is the digit (this raised, a 500, until 2026-11-26)
    if count == 1:  # one piece: it is the digit, the rules below keep it
        return mask.copy()  # (as they would, 12 of a 28x28 digit's 42 us; one piece is the rule)
    boxes = ndimage.find_objects(labels)
    if touching_edge_is_page:  # a page edge or shadow runs along the edge; a digit only ends there
        edge = np.zeros(count + 1, dtype=np.int64)
        for line in (labels[0], labels[-1], labels[1:-1, 0], labels[1:-1, -1]):
            edge += np.bincount(line, minlength=count + 1)
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
        return mask.copy()
    is_kept = np.zeros(count + 1, dtype=bool)
    is_kept[np.asarray(kept) + 1] = True
    return is_kept[labels]


def frame_fashion(gray: np.ndarray, size: int = MNIST_FRAME) -> np.ndarray:
    """Fashion-MNIST framing: longest side `size`, centred."""
    content = _stretch_and_crop(gray)
    if content is None:
        return np.zeros((size, size), dtype=np.uint8)
    fitted = _fit(content, size)
    return _place(fitted, size, (fitted.shape[0] / 2, fitted.shape[1] / 2))


def canonicalize(image: ImageLike, kind: str, size: tuple[int, int]) -> np.ndarray:
    """Turn a picture into the canonical uint8 H x W input of a model.

    kind: "digit" or "fashion" (the registry's `preprocessing`); size: the model's (H, W).
    """
    height, width = size
    if height != width:
        raise ValueError(f"square inputs only, got {size}")
    gray = light_on_dark(reduce_large(to_grayscale(image)))
    if gray.shape == (height, width):
        return gray
    if kind == "digit":
        if height < MNIST_FRAME:
            raise ValueError(f"digit models take at least 28x28 inputs, got {size}")
        if (height - MNIST_FRAME) % 2:
            raise ValueError(f"digit inputs are the 28x28 frame plus an even margin, got {size}")
        return frame_digit(gray, margin=(height - MNIST_FRAME) // 2)
    if kind == "fashion":
        return frame_fashion(gray, height)
    raise ValueError(f"unknown preprocessing kind {kind!r}; expected 'digit' or 'fashion'")
