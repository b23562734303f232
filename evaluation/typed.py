"""Digits 0-9 typed in the fonts Debian ships (evaluation/fonts.py), dark on white, as JPEG.

    render_typed(digit, font_file, rng) -> JPEG bytes
    render_typed_set(seed) -> [(JPEG bytes, label, font family), ...]   (780 images: 39 families x 10 x 2)

Each picture: a page of white or slightly tinted paper with a little noise, one digit in one of
the family's faces (regular, bold, italic where the package has them), a font size of 18-160 px,
anywhere on a page of varied size and aspect, rotated within 6 degrees, ink from black to dark
grey or blue, sometimes slightly soft, JPEG at quality 70-95. Reproducible: the set's images are
drawn from generators seeded by (seed, family, digit, repeat), so one family's pictures do not
change when another family is added or missing.
"""
from __future__ import annotations

import io
import zlib
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from evaluation.fonts import FAMILIES, FontFamily

FONT_SIZE = (18, 160)       # pixels (the em size handed to FreeType)
JPEG_QUALITY = (70, 95)     # inclusive
MAX_ROTATION = 6.0          # degrees
TARGET_COUNT = 760          # the set holds at least this many images (when every family is here)


@lru_cache(maxsize=512)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def _glyph_mask(digit: int, font_file: str, size: int, angle: float) -> np.ndarray:
    """Coverage 0..1 of the digit's glyph, rotated, cropped to its ink."""
    font = _font(font_file, size)
    left, top, right, bottom = font.getbbox(str(digit))
    pad = size // 4 + 4
    canvas = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    ImageDraw.Draw(canvas).text((pad - left, pad - top), str(digit), fill=255, font=font)
    canvas = canvas.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=0)
    mask = np.asarray(canvas, dtype=np.float32) / 255.0
    rows = np.flatnonzero((mask > 0.02).any(axis=1))
    cols = np.flatnonzero((mask > 0.02).any(axis=0))
    if len(rows) == 0:
        raise ValueError(f"{font_file} draws nothing for {digit!r}")
    return mask[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]


def render_typed(digit: int, font_file: str, rng: np.random.Generator) -> bytes:
    """One typed digit on paper as JPEG bytes."""
    size = int(rng.integers(FONT_SIZE[0], FONT_SIZE[1] + 1))
    angle = float(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
    mask = _glyph_mask(int(digit), font_file, size, angle)
    h, w = mask.shape
    # the page around it: margins from a sliver to several glyph sizes, any aspect
    margin_x = rng.uniform(0.1, 2.5, 2) * max(h, w)
    margin_y = rng.uniform(0.1, 1.5, 2) * h
    page_w = int(w + margin_x.sum()) + 4
    page_h = int(h + margin_y.sum()) + 4
    left = int(min(margin_x[0], page_w - w))
    top = int(min(margin_y[0], page_h - h))

    paper = rng.uniform(0.92, 1.0) * np.clip(1.0 + rng.normal(0, 0.015, 3), 0.94, 1.0)
    page = np.broadcast_to(paper.astype(np.float32), (page_h, page_w, 3)).copy()
    if rng.random() < 0.5:  # a faint brightness gradient across the page
        theta = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:page_h, 0:page_w].astype(np.float32)
        ramp = (np.cos(theta) * xx / page_w + np.sin(theta) * yy / page_h)
        page *= (1.0 - rng.uniform(0, 0.08) * (ramp - ramp.min()))[..., None]
    kind = rng.choice(["black", "grey", "blue"], p=[0.6, 0.25, 0.15])
    if kind == "black":
        ink = np.full(3, rng.uniform(0.0, 0.08))
    elif kind == "grey":
        ink = np.full(3, rng.uniform(0.15, 0.35))
    else:
        ink = np.array([rng.uniform(0.0, 0.15), rng.uniform(0.05, 0.2), rng.uniform(0.3, 0.55)])
    coverage = mask[..., None] * rng.uniform(0.9, 1.0)
    region = page[top: top + h, left: left + w]
    region[:] = region * (1.0 - coverage) + ink.astype(np.float32)[None, None, :] * coverage
    noise = rng.uniform(0.0, 0.02) * rng.standard_normal(page.shape[:2]).astype(np.float32)
    page = np.clip(page + noise[..., None], 0.0, 1.0)
    image = Image.fromarray(np.rint(page * 255).astype(np.uint8), mode="RGB")
    if rng.random() < 0.3:  # a soft print or a slightly defocused screenshot
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0) * max(1.0, size / 60)))
    quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _rng(seed: int, family: FontFamily, digit: int, repeat: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(family.name.encode()), digit, repeat])


def repeats_for(families) -> int:
    """Pictures per (family, digit) so that the whole set has at least TARGET_COUNT images."""
    return max(1, -(-TARGET_COUNT // (10 * max(1, len(families)))))


def render_typed_set(seed: int = 0, families=None, repeats: int | None = None):
    """[(JPEG bytes, label 0-9, family name)] for every available family (evaluation/fonts.py),
    every digit, `repeats` pictures each (default: enough for TARGET_COUNT in all)."""
    families = [f for f in (families or FAMILIES) if f.available()]
    if not families:
        raise FileNotFoundError("none of the font families of evaluation/fonts.py is installed: "
                                "`make evaluate` installs their Debian packages")
    repeats = repeats or repeats_for(FAMILIES)
    rows = []
    for family in families:
        faces = family.available()
        for digit in range(10):
            for repeat in range(repeats):
                rng = _rng(seed, family, digit, repeat)
                face = faces[int(rng.integers(len(faces)))] if repeat else faces[0]  # regular first
                rows.append((render_typed(digit, face, rng), digit, family.name))
    return rows
