"""Refuse images whose structure would cost a worker seconds to decode, before any decoding.

Dimensions and byte count do not bound decoding time: a progressive JPEG may repeat its scans
thousands of times, and Pillow walks some structures in Python, one loop turn each (JPEG segments
before the frame, PNG chunks, GIF extension sub-blocks, uncompressed TIFF strips and tiles, BMP RLE
runs). Each walker here reads only the container's framing (no pixels, no decompression) in bounded
steps and stops at the first limit passed, so it costs milliseconds whatever it is sent. The limits
are InputLimits' (settings/limits.py); `python -m reliability.crafted` measures the crafted worst
cases (docs/RELIABILITY.md). WebP needs no walker: libwebp parses an animation's frames in C, and
only the first is decoded.
"""
from __future__ import annotations

import re
import struct

from handlers.errors import InputError
from settings.limits import InputLimits

STRUCTURE_CODE = "too_complex"
# Entropy-coded data ends at the first 0xFF not followed by 0x00 (a stuffed byte) or RST0-7.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")
_JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # DHT, JPG and DAC share the range


def refuse(message: str, instead: str) -> InputError:
    return InputError(422, STRUCTURE_CODE, f"{message} Decoding it would take this server too long. {instead}")


def check_structure(data: bytes, limits: InputLimits) -> None:
    """Raise InputError 422 `too_complex` when the file's structure is past a decoding-cost limit.
    Files that are not of a walked format, or whose framing is broken, pass: the decoder judges them."""
    head = bytes(data[:8])
    try:
        if head.startswith(b"\xff\xd8"):
            check_jpeg(data, limits)
        elif head == b"\x89PNG\r\n\x1a\n":
            check_png(data, limits)
        elif head.startswith((b"GIF87a", b"GIF89a")):
            check_gif(data, limits)
        elif head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            check_tiff(data, limits)
        elif head.startswith(b"BM"):
            check_bmp(data, limits)
    except (IndexError, OverflowError, struct.error):  # offsets past the file, or past ssize_t
        pass  # framing cut short: the decoder refuses the file as corrupt


def check_jpeg(data: bytes, limits: InputLimits) -> None:
    """Count segments and scans up to the first EOI, and the 8 x 8 blocks the scans visit in all:
    libjpeg visits every block of a scan's components once per scan, even when the scan is empty."""
    JPEG_INSTEAD = "Save it as a baseline (non-progressive) JPEG, or as PNG, and send it again."
    pos, size, segments, scans, visits = 2, len(data), 0, 0, 0
    frame: tuple[int, int, dict[int, tuple[int, int]]] | None = None
    while pos + 4 <= size:
        if data[pos] != 0xFF:
            return  # broken framing: the decoder will say so
        while pos < size - 1 and data[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        marker = data[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            pos += 2
            continue
        if marker == 0xD9:  # EOI: the first image ends (an MPO's other pictures are never decoded)
            return
        segments += 1
        if segments > limits.max_jpeg_segments:
            raise refuse(f"The JPEG has more than {limits.max_jpeg_segments:,} segments (markers) in its "
                         "first image; ordinary files have a few dozen.", JPEG_INSTEAD)
        if pos + 4 > size:
            return
        length = (data[pos + 2] << 8) | data[pos + 3]
        body = data[pos + 4:pos + 2 + length]
        if marker in _JPEG_SOF and len(body) >= 6:
            height, width, count = struct.unpack(">HHB", body[1:6])
            components = {body[6 + 3 * i]: (body[7 + 3 * i] >> 4, body[7 + 3 * i] & 15)
                          for i in range(count) if 8 + 3 * i < len(body)}
            frame = (width, height, components)
        pos += 2 + length
        if marker == 0xDA:
            scans += 1
            if scans > limits.max_jpeg_scans:
                raise refuse(f"The JPEG has more than {limits.max_jpeg_scans} progressive scans; ordinary "
                             "progressive JPEGs have about 10.", JPEG_INSTEAD)
            visits += _scan_blocks(frame, body)
            if visits > limits.max_jpeg_scan_blocks:
                raise refuse(f"The JPEG's {scans} scans visit more than {limits.max_jpeg_scan_blocks:,} "
                             "8x8 blocks in all (blocks of each scan's components, summed over scans).",
                             JPEG_INSTEAD)
            found = _JPEG_MARKER.search(data, pos)
            if found is None:
                return  # truncated: the decoder will say so
            pos = found.start()


def _scan_blocks(frame, sos: bytes) -> int:
    if frame is None or not sos:
        return 0
    width, height, components = frame
    if not components:
        return 0
    h_max = max(h for h, _ in components.values()) or 1
    v_max = max(v for _, v in components.values()) or 1
    blocks = 0
    for i in range(sos[0]):
        if 1 + 2 * i >= len(sos):
            break
        h, v = components.get(sos[1 + 2 * i], (h_max, v_max))
        blocks += _ceil(_ceil(width * h, h_max), 8) * _ceil(_ceil(height * v, v_max), 8)
    return blocks


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def check_png(data: bytes, limits: InputLimits) -> None:
    """Count chunks: Pillow reads each (IDAT, text, private) with a Python loop turn."""
    pos, size, chunks = 8, len(data), 0
    while pos + 8 <= size:
        length, kind = struct.unpack_from(">I4s", data, pos)
        chunks += 1
        if chunks > limits.max_png_chunks:
            raise refuse(f"The PNG has more than {limits.max_png_chunks:,} chunks; ordinary files have a "
                         "few (image data in chunks of 8 KB or more).",
                         "Save it again with any image editor or library (which writes few, large chunks).")
        if kind == b"IEND":
            return
        pos += 12 + length


def check_gif(data: bytes, limits: InputLimits) -> None:
    """Count the extension sub-blocks before the first image, which Pillow reads one by one in
    Python; the image's own data is read in C, and later frames are never decoded."""
    size = len(data)
    if size < 13:
        return
    flags = data[10]
    pos = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    blocks = 0
    while pos < size:
        introducer = data[pos]
        if introducer != 0x21:  # 0x2C: the first image; 0x3B: the end; anything else: broken
            return
        pos += 2  # introducer, label
        while pos < size:
            length = data[pos]
            pos += 1 + length
            if length == 0:
                break
            blocks += 1
            if blocks > limits.max_gif_blocks:
                raise refuse(f"The GIF has more than {limits.max_gif_blocks:,} extension blocks (comments, "
                             "application data) before its first image.",
                             "Save it again without comments or metadata, or send PNG.")


TIFF_COMPRESSIONS = {1: "none", 2: "CCITT RLE", 3: "CCITT G3", 4: "CCITT G4", 5: "LZW",
                     8: "Deflate", 32946: "Deflate", 32773: "PackBits"}


def check_tiff(data: bytes, limits: InputLimits) -> None:
    """The first IFD (the one Pillow decodes; later IFDs are read only if asked for): number of
    entries, of strips or tiles (Pillow decodes uncompressed ones one Python call each), and the
    compression (JPEG inside TIFF would bring back the progressive-JPEG problem, unchecked)."""
    TIFF_INSTEAD = "Save it as a single-strip TIFF with LZW or Deflate compression, or send PNG."
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    try:
        if big:
            (offset,) = struct.unpack_from(order + "Q", data, 8)
            (entries,) = struct.unpack_from(order + "Q", data, offset)
            first, step, count_format, value_at = offset + 8, 20, "Q", 12
        else:
            (offset,) = struct.unpack_from(order + "I", data, 4)
            (entries,) = struct.unpack_from(order + "H", data, offset)
            first, step, count_format, value_at = offset + 2, 12, "I", 8
    except struct.error:
        return
    if entries > limits.max_tiff_tags:
        raise refuse(f"The TIFF's first image has {entries:,} tags; the limit is {limits.max_tiff_tags:,}.",
                     TIFF_INSTEAD)
    for i in range(entries):
        at = first + i * step
        try:
            tag, kind = struct.unpack_from(order + "HH", data, at)
            (count,) = struct.unpack_from(order + count_format, data, at + 4)
        except struct.error:
            return
        if tag in (273, 324) and count > limits.max_tiff_tiles:  # StripOffsets, TileOffsets
            what = "strips" if tag == 273 else "tiles"
            raise refuse(f"The TIFF's first image is cut into {count:,} {what}; the limit is "
                         f"{limits.max_tiff_tiles:,}.", TIFF_INSTEAD)
        if tag == 259 and count >= 1:  # Compression, a SHORT
            (compression,) = struct.unpack_from(order + "H", data, at + value_at)
            if compression not in TIFF_COMPRESSIONS:
                name = {6: "old-style JPEG", 7: "JPEG"}.get(compression, f"scheme {compression}")
                raise InputError(415, "unsupported_format", f"TIFF with {name} compression is not "
                                 f"accepted (accepted: {', '.join(sorted(set(TIFF_COMPRESSIONS.values())))}). "
                                 "Send the JPEG itself, or save the TIFF with LZW or Deflate, or send PNG.")


def check_bmp(data: bytes, limits: InputLimits) -> None:
    """RLE-compressed BMPs are decoded by Pillow in Python, one loop turn per run (2 bytes): bound
    the RLE data. Uncompressed and bit-field BMPs are decoded in C."""
    if len(data) < 34:
        return
    (header_size,) = struct.unpack_from("<I", data, 14)
    if header_size < 40:
        return  # OS/2 BMPs have no compression field
    (compression,) = struct.unpack_from("<I", data, 30)
    (offset,) = struct.unpack_from("<I", data, 10)
    rle_bytes = len(data) - offset
    if compression in (1, 2) and rle_bytes > limits.max_bmp_rle_bytes:
        raise refuse(f"The BMP is RLE-compressed with {rle_bytes:,} bytes of runs; the limit is "
                     f"{limits.max_bmp_rle_bytes:,}.", "Save it as an uncompressed BMP, or send PNG.")
