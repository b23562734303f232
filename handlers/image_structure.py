"""Refuse images whose structure would cost a worker seconds to decode, before any decoding.

Dimensions and byte count do not bound decoding time: a progressive JPEG may repeat its scans
thousands of times, and Pillow walks some structures in Python, one loop turn each (JPEG segments
before the frame, PNG chunks, GIF extension sub-blocks, uncompressed TIFF strips and tiles, BMP RLE
runs). Each walker here reads only the container's framing (no pixels, no decompression but a PNG
EXIF text chunk's, inflated no further than the EXIF limit) in bounded steps and stops at the first
limit passed, so it costs milliseconds whatever it is sent. The limits are InputLimits'
(settings/limits.py); `python -m reliability.crafted` measures the crafted worst cases
(docs/RELIABILITY.md). WebP needs no walker: libwebp parses an animation's frames in C, and only the
first is decoded.

Metadata costs too: `ImageOps.exif_transpose` (handlers/image_decoding.py) reads the whole EXIF
into Python values and writes it back, about a second per MB of number arrays, and Pillow takes
EXIF from a JPEG's APP1 segments (all of them, concatenated), a PNG's eXIf chunk and its text
chunks ("exif", "Raw profile type exif", compressed or not), a WebP's EXIF chunk and a TIFF's Exif,
GPS and Interop IFDs (read whole when the pixels load). The walkers below add up the EXIF each file
carries and refuse more than max_exif_bytes (413 `exif_too_large`) before anything parses it;
`check_read_metadata` checks what Pillow read with the header (WebP's EXIF chunk, which libwebp
hands over unparsed), before the pixels load.
"""
from __future__ import annotations

import re
import struct
import zlib

from handlers.errors import InputError
from settings.limits import InputLimits

STRUCTURE_CODE = "too_complex"
EXIF_CODE = "exif_too_large"
EXIF_HEADER = b"Exif\0\0"  # before the EXIF's TIFF structure in JPEG APP1 segments (and in Pillow's info["exif"])
# Entropy-coded data ends at the first 0xFF not followed by 0x00 (a stuffed byte) or RST0-7.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")
_JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # DHT, JPG and DAC share the range



def refuse(message: str, instead: str) -> InputError:
    return InputError(422, STRUCTURE_CODE, f"{message} Decoding it would take this server too long. {instead}")


def refuse_exif(what: str, size: int, limits: InputLimits) -> InputError:
    return InputError(413, EXIF_CODE, f"The {what} carries at least {size:,} bytes of EXIF metadata; the limit "
                      f"is {limits.max_exif_bytes:,} (what one JPEG EXIF segment holds): reading more would take "
                      "this server too long. Strip the metadata and send the picture again (exiftool -all= FILE, "
                      "mogrify -strip FILE, or save it again without EXIF).")


def check_read_metadata(image, limits: InputLimits) -> None:
    """The EXIF Pillow read with the header (`Image.open`), before anything parses it: a WebP's EXIF
    chunk, which libwebp hands over unparsed, and any other format's, which the walkers bounded already."""
    size = 0
    for key, per_byte in (("exif", 1), ("Raw profile type exif", 2)):
        value = image.info.get(key)
        if isinstance(value, (bytes, bytearray)):
            size += len(value) - (6 if value.startswith(EXIF_HEADER) else 0)
        elif isinstance(value, str):
            size += len(value) // per_byte
    if size > limits.max_exif_bytes:
        raise refuse_exif(f"{image.format} image", size, limits)


def check_structure(data: bytes, limits: InputLimits) -> None:
    """Raise InputError 422 `too_complex` when the file's structure is past a decoding-cost limit, 413
    `exif_too_large` when it carries more EXIF than max_exif_bytes. Files that are not of a walked
    format, or whose framing is broken, pass: the decoder judges them."""
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
    pos, size, segments, scans, visits, exif = 2, len(data), 0, 0, 0, 0
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
        if marker == 0xE1 and body[:6] == EXIF_HEADER:  # Pillow joins every Exif APP1 segment into one EXIF
            exif += len(body) - 6
            if exif > limits.max_exif_bytes:
                raise refuse_exif("JPEG", exif, limits)
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


# Text chunks Pillow takes EXIF from, by keyword -> characters per EXIF byte ("Raw profile type exif":
# ImageMagick's hex, which Pillow reads when the PNG has no eXIf chunk).
PNG_EXIF_KEYWORDS = {b"exif": 1, b"Raw profile type exif": 2}
PNG_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")
_PNG_KEYWORD_PREFIXES = tuple(keyword + b"\0" for keyword in PNG_EXIF_KEYWORDS)


def check_png(data: bytes, limits: InputLimits) -> None:
    """Count chunks: Pillow reads each (IDAT, text, private) with a Python loop turn. Add up the EXIF
    of eXIf chunks and of EXIF text chunks, before the image data or after it (read when it loads)."""
    pos, size, chunks, exif = 8, len(data), 0, 0
    while pos + 8 <= size:
        length, kind = struct.unpack_from(">I4s", data, pos)
        chunks += 1
        if chunks > limits.max_png_chunks:
            raise refuse(f"The PNG has more than {limits.max_png_chunks:,} chunks; ordinary files have a "
                         "few (image data in chunks of 8 KB or more).",
                         "Save it again with any image editor or library (which writes few, large chunks).")
        if kind == b"IEND":
            return
        if kind == b"eXIf":
            exif += length
        elif kind in PNG_TEXT_CHUNKS and data.startswith(_PNG_KEYWORD_PREFIXES, pos + 8):
            exif += _png_text_exif(kind, data[pos + 8:pos + 8 + length], limits.max_exif_bytes - exif)
        if exif > limits.max_exif_bytes:
            raise refuse_exif("PNG", exif, limits)
        pos += 12 + length


def _png_text_exif(kind: bytes, body: bytes, budget: int) -> int:
    """The EXIF bytes Pillow would read from one text chunk whose keyword is an EXIF one. Compressed
    text is inflated only as far as `budget` EXIF bytes could reach (in C, ~2 x 64 KB at most): text
    that goes on past that counts as over the budget, whatever it holds."""
    keyword, _, text = body.partition(b"\0")
    per_byte = PNG_EXIF_KEYWORDS[keyword]
    compressed = kind == b"zTXt"
    if kind == b"zTXt":
        text = text[1:]  # compression method
    elif kind == b"iTXt":
        compressed = text[:1] != b"\0"
        text = text[2:].split(b"\0", 2)[-1]  # after the language and the translated keyword
    if compressed:
        cap = per_byte * (max(budget, 0) + 1) + 4096  # hex lines: one newline per 64-72 characters
        inflater = zlib.decompressobj()
        try:
            text = inflater.decompress(text, cap)
        except zlib.error:
            return 0  # Pillow reads undecompressable text as empty
        if len(text) >= cap and not inflater.eof:
            return budget + 1
    if per_byte == 1:
        return len(text)
    return (len(text) - text.count(b"\n")) // per_byte


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
    layout = (order, big, limits)
    exif = 0
    for i in range(entries):
        at = first + i * step
        try:
            tag, kind = struct.unpack_from(order + "HH", data, at)
            (count,) = struct.unpack_from(order + count_format, data, at + 4)
        except struct.error:
            return
        if tag in TIFF_EXIF_IFDS:  # Pillow reads these IFDs whole when the pixels load
            exif += _tiff_exif_ifd(data, layout, _tiff_pointer(data, order, kind, at + value_at), tag)
            if exif > limits.max_exif_bytes:
                raise refuse_exif("TIFF", exif, limits)
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


# TIFF field types -> bytes per value, as Pillow reads them (other types it skips)
TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4,
                   16: 8, 17: 8, 18: 8}
TIFF_EXIF_IFDS = (34665, 34853)  # Exif, GPS (the Exif IFD may point on to the Interop IFD, 40965)
TIFF_INTEROP_IFD = 40965


def _tiff_pointer(data: bytes, order: str, kind: int, at: int) -> int:
    """The offset an IFD-pointer tag holds in its value field (SHORT, LONG, IFD, LONG8 or IFD8)."""
    fmt = {3: "H", 16: "Q", 18: "Q"}.get(kind, "I")
    return struct.unpack_from(order + fmt, data, at)[0]


def _tiff_exif_ifd(data: bytes, layout, offset: int, tag: int) -> int:
    """The bytes of one EXIF IFD as Pillow reads it: its entries and every value (values that
    overlap count each time, as Pillow unpacks each), the Exif IFD's Interop IFD included. Stops
    counting once past max_exif_bytes, so it walks at most ~5,000 entries."""
    order, big, limits = layout
    count_format, step, value_at, inline = ("Q", 20, 12, 8) if big else ("I", 12, 8, 4)
    (entries,) = struct.unpack_from(order + ("Q" if big else "H"), data, offset)
    first, size = offset + (8 if big else 2), entries * step
    for at in range(first, first + step * entries, step):
        if size > limits.max_exif_bytes:
            break
        entry_tag, kind = struct.unpack_from(order + "HH", data, at)
        (count,) = struct.unpack_from(order + count_format, data, at + 4)
        value = count * TIFF_TYPE_SIZES.get(kind, 0)
        size += value if value > inline else 0
        if tag == TIFF_EXIF_IFDS[0] and entry_tag == TIFF_INTEROP_IFD:
            size += _tiff_exif_ifd(data, layout, _tiff_pointer(data, order, kind, at + value_at), entry_tag)
    return size


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
