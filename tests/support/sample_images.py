"""Pictures the way clients really send them, built from real held-out images.

`photo_of(digit)`: the 8x8 held-out digit as a 'photo' (dark ink on white paper, 160x120, off
centre), which is what a phone or scanner gives. `encodings(picture)` returns the same picture in
every supported lossless container and mode; `lossy(picture)` the JPEG variants.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

LOSSLESS = ("png_L", "png_L16", "png_L16_transparent", "png_LA", "png_RGB", "png_RGBA", "png_P", "png_P_transparent", "png_RGBA_transparent",
            "bmp", "gif", "webp_lossless", "tiff", "tiff_lzw")


def photo_of(raw: np.ndarray, size=(160, 120), box=90, at=(40, 15)) -> Image.Image:
    """Dark-on-light grayscale picture of a (light-on-dark) raw data-set image."""
    digit = Image.fromarray(255 - raw).resize((box, box), Image.Resampling.BICUBIC)
    paper = Image.new("L", size, 255)
    paper.paste(digit, at)
    return paper


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def encodings(picture: Image.Image) -> dict[str, bytes]:
    """The same grayscale picture, losslessly, in each format and mode we accept."""
    gray = picture.convert("L")
    rgb = gray.convert("RGB")
    arr = np.asarray(gray)
    palette = gray.convert("P")  # grayscale palette: lossless for L
    # palette index = grey level; index 255 (the paper) is transparent and its colour is black, so
    # only compositing on white gives the paper back
    transparent_palette = gray.convert("P")
    transparent_palette.putpalette([v for i in range(255) for v in (i, i, i)] + [0, 0, 0])
    paper = arr == 255
    rgba = np.dstack([arr, arr, arr, np.where(paper, 0, 255)]).astype(np.uint8)
    rgba[paper, :3] = 0  # transparent pixels are black underneath
    # 16-bit grey with a tRNS colour key: the paper is sample 1 (near black), marked transparent
    gray16 = np.where(paper, 1, arr.astype(np.uint16) * 257).astype(np.uint16)
    return {
        "png_L": encode(gray, "PNG"),
        "png_L16": encode(Image.fromarray(arr.astype(np.uint16) * 257), "PNG"),
        "png_L16_transparent": encode(Image.fromarray(gray16), "PNG", transparency=1),
        "png_LA": encode(gray.convert("LA"), "PNG"),
        "png_RGB": encode(rgb, "PNG"),
        "png_RGBA": encode(rgb.convert("RGBA"), "PNG"),
        "png_P": encode(palette, "PNG"),
        "png_P_transparent": encode(transparent_palette, "PNG", transparency=255),
        "png_RGBA_transparent": encode(Image.fromarray(rgba, "RGBA"), "PNG"),
        "bmp": encode(rgb, "BMP"),
        "gif": encode(gray, "GIF"),
        "webp_lossless": encode(rgb, "WEBP", lossless=True),
        "tiff": encode(gray, "TIFF"),
        "tiff_lzw": encode(rgb, "TIFF", compression="tiff_lzw"),
    }


def lossy(picture: Image.Image) -> dict[str, bytes]:
    rgb = picture.convert("RGB")
    return {
        "jpeg_q90": encode(rgb, "JPEG", quality=90),
        "jpeg_q95_progressive": encode(rgb, "JPEG", quality=95, progressive=True),
        "jpeg_gray_q92": encode(picture.convert("L"), "JPEG", quality=92),
        "webp_q95": encode(rgb, "WEBP", quality=95),
    }


def jpeg_with_orientation(picture: Image.Image, quality: int = 95) -> bytes:
    """Pixels stored rotated 90 degrees counter-clockwise, EXIF Orientation 6 to show them upright."""
    stored = picture.convert("RGB").transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(stored, "JPEG", quality=quality, exif=exif.tobytes())


def rotated_without_exif(picture: Image.Image, quality: int = 95) -> bytes:
    return encode(picture.convert("RGB").transpose(Image.Transpose.ROTATE_90), "JPEG", quality=quality)


def animated_gif(first: Image.Image, second: Image.Image) -> bytes:
    buf = io.BytesIO()
    first.convert("L").save(buf, format="GIF", save_all=True, append_images=[second.convert("L")], duration=100)
    return buf.getvalue()


def one_bit_png(picture: Image.Image) -> bytes:
    return encode(picture.convert("L").point(lambda v: 255 if v > 128 else 0).convert("1"), "PNG")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height, with a tiny (lying) body: a bomb's header."""
    import struct
    import zlib
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def decompression_bomb(side: int = 12_000) -> bytes:
    """A real, valid PNG of side x side black pixels: ~144 Mpx that compress to a few hundred KB."""
    import struct
    import zlib
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = b"\0" * (side + 1)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
