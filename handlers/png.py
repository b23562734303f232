"""Pixels -> the bytes of a PNG file: the one PNG encoder here (explanations, data sets, tools, tests)."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image


def png_bytes(image: np.ndarray | Image.Image, optimize: bool = False) -> bytes:
    """A uint8 array (H x W grey, H x W x 3 RGB) or a PIL image as the PNG file a client sends."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=optimize)
    return buffer.getvalue()
