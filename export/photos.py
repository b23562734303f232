"""Held-out MNIST digits as phone photos of dark ink on paper.

    render_photo(digit28, rng) -> JPEG bytes
    render_photo_with_info(digit28, rng) -> (JPEG bytes, PhotoInfo)

A 28x28 white-on-black MNIST digit becomes the pen stroke; the page is modelled the way a camera
sees it: reflectance (paper colour and texture, ink that is not pure black, specks of dust or
graphite) times illumination (a brightness gradient in any direction, vignetting, a soft shadow
of a hand or phone), then the camera (slight defocus or motion blur, exposure, sensor noise with
colour, JPEG at quality 70-90 with 4:2:0 chroma). The picture is 640x480, the digit's ink is
140-260 px tall, anywhere on the page, rotated within 10 degrees.

Every random choice comes from the `rng` argument (a numpy Generator): the same seed gives the
same bytes. Nothing here knows how the server reads pictures.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

WIDTH, HEIGHT = 640, 480
DIGIT_HEIGHT = (140, 260)      # ink height in pixels
JPEG_QUALITY = (70, 90)        # inclusive
MAX_ROTATION = 10.0            # degrees
INK_THRESHOLD = 0.25           # a pixel of the stroke mask is ink when above this (for the ink box)
_UPSCALE = 8                   # the 28x28 digit is enlarged this much before rotating


@dataclass(frozen=True)
class PhotoInfo:
    """What was drawn: the ink box in the picture (left, top, right, bottom; right/bottom exclusive)."""
    ink_box: tuple[int, int, int, int]
    rotation: float
    quality: int
    ink_rgb: tuple[int, int, int]
    paper_rgb: tuple[int, int, int]
    shadow: float               # darkest shadow factor applied (0 = none)
    blur: float

    @property
    def digit_height(self) -> int:
        return self.ink_box[3] - self.ink_box[1]


def _stroke_mask(digit28: np.ndarray, height: int, angle: float, rng: np.random.Generator) -> np.ndarray:
    """The digit as an ink-coverage mask 0..1, rotated, its ink exactly `height` px tall."""
    digit = np.asarray(digit28, dtype=np.uint8)
    if digit.ndim != 2:
        raise ValueError(f"expected a 2-D white-on-black digit, got shape {digit.shape}")
    rows = np.flatnonzero((digit > 0).any(axis=1))
    cols = np.flatnonzero((digit > 0).any(axis=0))
    if len(rows) == 0:
        raise ValueError("the digit image is blank")
    crop = digit[max(rows[0] - 1, 0): rows[-1] + 2, max(cols[0] - 1, 0): cols[-1] + 2]
    big = Image.fromarray(crop).resize((crop.shape[1] * _UPSCALE, crop.shape[0] * _UPSCALE),
                                       Image.Resampling.BICUBIC)
    big = big.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=0)
    mask = np.asarray(big, dtype=np.float32) / 255.0
    # Pen strokes have edges: a soft threshold of the smooth upscaled digit, its width and softness
    # varied (a fine pen, a felt tip, a soft pencil).
    level = rng.uniform(0.4, 0.7)
    softness = rng.uniform(0.03, 0.12)
    lo, hi = (1.0 / (1.0 + np.exp(-(v - level) / softness)) for v in (0.0, 1.0))
    mask = ((1.0 / (1.0 + np.exp(-(mask - level) / softness)) - lo) / (hi - lo)).astype(np.float32)
    ink_rows = np.flatnonzero((mask > INK_THRESHOLD).any(axis=1))
    ink_cols = np.flatnonzero((mask > INK_THRESHOLD).any(axis=0))
    mask = mask[ink_rows[0]: ink_rows[-1] + 1, ink_cols[0]: ink_cols[-1] + 1]
    scale = height / mask.shape[0]
    width = max(1, round(mask.shape[1] * scale))
    resized = Image.fromarray(np.ascontiguousarray(mask, dtype=np.float32), mode="F").resize(
        (width, height), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Zero-mean, unit-ish noise varying over about `cell` pixels (paper fibres, uneven light)."""
    small = np.ascontiguousarray(rng.standard_normal((shape[0] // cell + 2, shape[1] // cell + 2)), dtype=np.float32)
    big = np.asarray(Image.fromarray(small, mode="F").resize((small.shape[1] * cell, small.shape[0] * cell),
                                                             Image.Resampling.BICUBIC), dtype=np.float32)
    return big[: shape[0], : shape[1]]


def _illumination(rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Light falling on the page (HEIGHT x WIDTH, about 0.4..1.1) and the shadow's depth."""
    cx = ((np.arange(WIDTH, dtype=np.float32) - WIDTH / 2) / WIDTH)[None, :]
    cy = ((np.arange(HEIGHT, dtype=np.float32) - HEIGHT / 2) / WIDTH)[:, None]
    # a gradient in a random direction, strength up to 45% across the page
    theta = rng.uniform(0, 2 * np.pi)
    strength = rng.uniform(0.05, 0.45)
    light = np.float32(1.0) + np.float32(strength * 1.6) * (np.float32(np.cos(theta)) * cx
                                                          + np.float32(np.sin(theta)) * cy)
    # a lamp's hot spot or a window's glow somewhere
    if rng.random() < 0.5:
        hx, hy = rng.uniform(-0.5, 0.5), rng.uniform(-0.4, 0.4)
        radius = rng.uniform(0.2, 0.6)
        light += rng.uniform(0.03, 0.15) * np.exp(-((cx - hx) ** 2 + (cy - hy) ** 2) / radius ** 2)
    # vignetting of a phone lens
    light *= 1.0 - rng.uniform(0.0, 0.35) * (cx ** 2 + cy ** 2) / 0.3125
    # large-scale unevenness
    light *= 1.0 + 0.03 * _smooth_noise(rng, (HEIGHT, WIDTH), 160)
    # soft shadows: a hand or the phone between the light and the page, an edge with a penumbra
    depth = 0.0
    for _ in range(rng.choice([0, 1, 1, 2], p=[0.25, 0.35, 0.25, 0.15])):
        phi = rng.uniform(0, 2 * np.pi)
        offset = rng.uniform(-0.45, 0.45)
        penumbra = rng.uniform(0.02, 0.2)
        d = rng.uniform(0.1, 0.55)
        # a slightly curved edge (the outline of a hand, not a ruler)
        bend = rng.uniform(-0.6, 0.6)
        along = -np.sin(phi) * cx + np.cos(phi) * cy
        across = np.cos(phi) * cx + np.sin(phi) * cy + bend * along ** 2 - offset
        inside = 1.0 / (1.0 + np.exp(-across / penumbra))
        light *= 1.0 - d * inside
        depth = max(depth, d)
    return light.astype(np.float32), depth


def _paper(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Paper reflectance (HEIGHT x WIDTH x 3) and its mean RGB colour (0..1)."""
    kind = rng.choice(["white", "cream", "recycled", "cool", "yellow"], p=[0.4, 0.2, 0.15, 0.15, 0.1])
    base = {"white": (0.92, 0.92, 0.92), "cream": (0.93, 0.89, 0.80), "recycled": (0.84, 0.82, 0.78),
            "cool": (0.86, 0.89, 0.93), "yellow": (0.96, 0.92, 0.68)}[kind]
    colour = np.clip(np.array(base) + rng.normal(0, 0.02, 3), 0.6, 1.0).astype(np.float32)
    texture = (rng.uniform(0.005, 0.025) * _smooth_noise(rng, (HEIGHT, WIDTH), int(rng.integers(3, 9)))
               + rng.uniform(0.0, 0.012) * rng.standard_normal((HEIGHT, WIDTH), dtype=np.float32))
    return colour[None, None, :] * (1.0 + texture[..., None]), colour


def _specks(rng: np.random.Generator, reflectance: np.ndarray) -> None:
    """Dust, graphite and paper flecks: small dark spots anywhere on the page (in place)."""
    count = int(rng.integers(0, 30))
    for _ in range(count):
        r = rng.uniform(0.6, 2.8)
        x, y = rng.uniform(0, WIDTH), rng.uniform(0, HEIGHT)
        x0, x1 = int(max(x - 4 * r, 0)), int(min(x + 4 * r + 1, WIDTH))
        y0, y1 = int(max(y - 4 * r, 0)), int(min(y + 4 * r + 1, HEIGHT))
        yy, xx = np.mgrid[y0:y1, x0:x1]
        spot = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * r * r)).astype(np.float32)
        darkness = rng.uniform(0.15, 0.7)
        reflectance[y0:y1, x0:x1] *= (1.0 - darkness * spot)[..., None]


def _ink_colour(rng: np.random.Generator) -> np.ndarray:
    """Reflectance of the ink: black or blue ballpoint, felt tip, pencil; never pure black."""
    kind = rng.choice(["black", "blue", "pencil", "felt"], p=[0.4, 0.3, 0.15, 0.15])
    if kind == "black":
        c = np.full(3, rng.uniform(0.06, 0.2))
    elif kind == "blue":
        c = np.array([rng.uniform(0.08, 0.2), rng.uniform(0.1, 0.25), rng.uniform(0.35, 0.6)])
    elif kind == "pencil":
        c = np.full(3, rng.uniform(0.25, 0.42))
    else:
        c = np.full(3, rng.uniform(0.04, 0.12)) + rng.uniform(0, 0.06, 3)
    return c.astype(np.float32)


def render_photo_with_info(digit28: np.ndarray, rng: np.random.Generator) -> tuple[bytes, PhotoInfo]:
    """One phone photo of the digit (JPEG bytes) and what was drawn."""
    height = int(rng.integers(DIGIT_HEIGHT[0], DIGIT_HEIGHT[1] + 1))
    angle = float(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
    mask = _stroke_mask(digit28, height, angle, rng)
    h, w = mask.shape
    left = int(rng.integers(0, WIDTH - w + 1))
    top = int(rng.integers(0, HEIGHT - h + 1))

    reflectance, paper_colour = _paper(rng)
    ink = _ink_colour(rng)
    opacity = rng.uniform(0.8, 0.97)
    # ink density varies along the stroke (pressure, a drying pen)
    cell = max(8, h // 6)
    coverage = mask * opacity * (1.0 - rng.uniform(0, 0.15)
                                 * np.clip(0.5 + 0.5 * _smooth_noise(rng, mask.shape, cell), 0, 1))
    region = reflectance[top: top + h, left: left + w]
    region[:] = region * (1.0 - coverage[..., None]) + ink[None, None, :] * coverage[..., None]
    _specks(rng, reflectance)

    light, shadow = _illumination(rng)
    exposure = rng.uniform(0.8, 1.15)
    # a slightly warm or cool light
    white_balance = np.clip(1.0 + rng.normal(0, 0.04, 3), 0.88, 1.12).astype(np.float32)
    linear = reflectance * light[..., None] * white_balance[None, None, :] * exposure

    # camera: gamma-ish response, then defocus or hand-shake blur on the 8-bit picture, then noise
    picture = np.clip(linear, 0, 1) ** rng.uniform(0.85, 1.1)
    image = Image.fromarray(np.rint(picture * 255).astype(np.uint8), mode="RGB")
    blur = float(rng.uniform(0.3, 1.8))
    if rng.random() < 0.25:  # hand shake: a short motion blur in some direction
        length = int(rng.integers(3, 8))
        kernel = np.zeros((length, length), dtype=np.float32)
        kernel[length // 2, :] = 1.0
        kernel = ndimage.rotate(kernel, rng.uniform(0, 180), reshape=False, order=1)
        kernel /= kernel.sum()
        arr = np.asarray(image, dtype=np.float32)
        arr = np.stack([ndimage.convolve(arr[..., c], kernel, mode="nearest") for c in range(3)], axis=-1)
        image = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="RGB")
        blur *= 0.5
    image = image.filter(ImageFilter.GaussianBlur(blur))
    arr = np.asarray(image, dtype=np.float32)
    # sensor noise: shot noise (grows with brightness) plus read noise, partly in colour
    sigma = rng.uniform(1.0, 6.0)
    luma_noise = rng.standard_normal(arr.shape[:2], dtype=np.float32)[..., None]
    chroma_noise = rng.standard_normal(arr.shape, dtype=np.float32)
    noise = sigma * (0.7 * luma_noise + 0.5 * chroma_noise) * np.sqrt(0.3 + arr / 255.0)
    arr = np.clip(np.rint(arr + noise), 0, 255).astype(np.uint8)

    quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
    buffer = io.BytesIO()
    Image.fromarray(arr, mode="RGB").save(buffer, format="JPEG", quality=quality, subsampling=2)
    info = PhotoInfo(
        ink_box=(left, top, left + w, top + h), rotation=angle, quality=quality,
        ink_rgb=tuple(int(round(v * 255)) for v in ink),
        paper_rgb=tuple(int(round(v * 255)) for v in paper_colour),
        shadow=float(shadow), blur=blur,
    )
    return buffer.getvalue(), info


def render_photo(digit28: np.ndarray, rng: np.random.Generator) -> bytes:
    """One phone photo of a 28x28 white-on-black digit as JPEG bytes (see the module docstring)."""
    return render_photo_with_info(digit28, rng)[0]


def photo_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of the `index`-th photo of a seeded set: each photo reproducible on its own."""
    return np.random.default_rng([seed, index])
