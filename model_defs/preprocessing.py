"""Where an image becomes the model's canonical input: one function, used for training and serving.

`canonicalize(image, kind, size)` turns any decoded picture (a PIL image or a 2-D array) into the
canonical uint8 H x W array the exported model takes: light content on a dark background,
0..255, framed the way the training data were. The training data sets go through this very
code (see export/datasets.py), and so does every request the handler serves, so there is no
train/serve skew by construction. `canonicalize_stack` does it for a stack of pictures of one
shape at once; one picture is a stack of one (model_defs/canonical_batch.py gathers the stacks).

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
     ink is found as on a photographed page (model_defs/ink.py): the page's lighting is removed (its
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

from model_defs.filters import border_pixels, reduce_to, stacked
from model_defs.ink import find_inks

ImageLike = Union[Image.Image, np.ndarray]

MNIST_FRAME = 28      # MNIST's canonical frame
MNIST_DIGIT_BOX = 20  # MNIST digits are fitted into a 20x20 box inside the frame
CONTENT_THRESHOLD = 0.1  # a pixel is content when brighter than 10% of the brightest pixel
WORKING_SIDE = 1024      # larger pictures are box-reduced to at most this many pixels a side first
DIGIT_WORKING_SIDE = 240  # a digit's ink is found on pictures box-resized to this a side (a photo's digit: 50-100 px)


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
    return reduce_to(gray, WORKING_SIDE)


def shrink_to(grays: np.ndarray, side: int) -> np.ndarray:
    """A uint8 H x W picture (or each of a [N, H, W] stack) larger than `side` a side, box-resized so
    that its long side is `side` (the aspect ratio kept); smaller pictures unchanged."""
    height, width = grays.shape[-2:]
    if max(height, width) <= side:
        return grays
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    shrunk = [np.asarray(Image.fromarray(gray).resize(size, Image.Resampling.BOX))
              for gray in grays.reshape(-1, height, width)]
    return stacked(shrunk).reshape(*grays.shape[:-2], size[1], size[0])


def light_on_dark(grays: np.ndarray) -> np.ndarray:
    """Invert dark-on-light pictures (a border brighter than mid-grey: ink on paper, a product on a
    white page) so that content is light on a dark background; one picture or each of a stack."""
    ring = border_pixels(grays)
    inverted = ring.sum(axis=-1) > 127.5 * ring.shape[-1]  # its mean over 127.5, in whole numbers
    flags = inverted.reshape(-1).tolist()
    if not any(flags):
        return grays
    if all(flags):
        return 255 - grays
    return np.where(inverted[:, None, None], 255 - grays, grays)


def centres_of_mass(contents: list[np.ndarray]) -> list[tuple[float, float]]:
    """(row, col) of the intensity-weighted centre of each picture, in pixel-area coordinates (+0.5);
    the middle of a blank one. The masses are summed for all the pictures at once."""
    if len(contents) == 1:
        stack = contents[0][None]
    else:  # zero-padded to one shape: the masses are sums of whole numbers, exact in any order
        stack = np.zeros((len(contents), *np.max([c.shape for c in contents], axis=0)), dtype=contents[0].dtype)
        for plane, content in zip(stack, contents):
            plane[: content.shape[0], : content.shape[1]] = content
    row_mass, col_mass = stack.sum(axis=2, dtype=np.float64), stack.sum(axis=1, dtype=np.float64)
    rows = (row_mass @ np.arange(row_mass.shape[1], dtype=np.float64)).tolist()
    cols = (col_mass @ np.arange(col_mass.shape[1], dtype=np.float64)).tolist()
    return [(row / total + 0.5, col / total + 0.5) if total else (content.shape[0] / 2, content.shape[1] / 2)
            for row, col, total, content in zip(rows, cols, row_mass.sum(axis=1).tolist(), contents)]


def _fit(content: np.ndarray, box: int) -> np.ndarray:
    """Resize so that the longest side is `box`, keeping the aspect ratio."""
    h, w = content.shape
    scale = box / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return content
    return np.asarray(Image.fromarray(content).resize(size, Image.Resampling.LANCZOS))


def _place(canvas: np.ndarray, content: np.ndarray, centre: tuple[float, float], frame: int, margin: int = 0) -> None:
    """Put `content` into the black frame x frame area inside `canvas` (`margin` pixels in from its
    edges) with `centre` (row, col) at the area's middle."""
    h, w = content.shape
    top = min(max(round(frame / 2 - centre[0]), 0), frame - h) + margin
    left = min(max(round(frame / 2 - centre[1]), 0), frame - w) + margin
    canvas[top : top + h, left : left + w] = content


def frame_digits(pictures: np.ndarray, margin: int = 0) -> np.ndarray:
    """MNIST framing of the ink of each light-on-dark picture of a uint8 [N, h, w] stack: a 20x20
    box, centred by centre of mass in 28x28 (plus `margin` a side); a blank frame where no ink."""
    side = MNIST_FRAME + 2 * margin
    frames = np.zeros((len(pictures), side, side), dtype=np.uint8)
    inks = find_inks(shrink_to(pictures, DIGIT_WORKING_SIDE))
    found = [i for i, ink in enumerate(inks) if ink is not None]
    fitted = [_fit(inks[i], MNIST_DIGIT_BOX) for i in found]
    for i, content, centre in zip(found, fitted, centres_of_mass(fitted) if fitted else []):
        _place(frames[i], content, centre, MNIST_FRAME, margin)
    return frames


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


def frame_fashion(gray: np.ndarray, canvas: np.ndarray) -> None:
    """Fashion-MNIST framing of a picture into a black square `canvas`: longest side its side, centred."""
    content = _stretch_and_crop(gray)
    if content is not None:
        fitted = _fit(content, len(canvas))
        _place(canvas, fitted, (fitted.shape[0] / 2, fitted.shape[1] / 2), len(canvas))


def size_error(kind: str, size: tuple[int, int]) -> str | None:
    """Why a model of this preprocessing kind cannot take inputs of this (H, W); None when it can."""
    height, width = size
    if height != width:
        return f"square inputs only, got {size}"
    if kind == "digit" and height < MNIST_FRAME:
        return f"digit models take at least 28x28 inputs, got {size}"
    if kind == "digit" and (height - MNIST_FRAME) % 2:
        return f"digit inputs are the 28x28 frame plus an even margin, got {size}"
    if kind not in ("digit", "fashion"):
        return f"unknown preprocessing kind {kind!r}; expected 'digit' or 'fashion'"
    return None


def canonicalize(image: ImageLike, kind: str, size: tuple[int, int]) -> np.ndarray:
    """Turn a picture into the canonical uint8 H x W input of a model.

    kind: "digit" or "fashion" (the registry's `preprocessing`); size: the model's (H, W).
    """
    return canonicalize_stack(reduce_large(to_grayscale(image))[None], kind, size)[0]


def canonicalize_stack(grays: np.ndarray, kind: str, size: tuple[int, int]) -> np.ndarray:
    """`canonicalize` of each picture of a uint8 [N, h, w] stack of grey pictures of one shape (as
    `to_grayscale` and `reduce_large` leave them): uint8 [N, H, W]."""
    error = size_error(kind, size)
    if error:
        raise ValueError(error)
    pictures = light_on_dark(grays)
    del grays  # when inverted, the grey levels are not needed: large ones go before the work
    if pictures.shape[1:] == tuple(size):
        return pictures
    if kind == "digit":
        return frame_digits(pictures, margin=(size[0] - MNIST_FRAME) // 2)
    frames = np.zeros((len(pictures), *size), dtype=np.uint8)
    for i in range(len(pictures)):
        frame_fashion(pictures[i], frames[i])
    return frames
