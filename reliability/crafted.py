"""Crafted images of legal dimensions and byte count whose *structure* makes them costly to decode.

Each maker returns the file's bytes; every one fits the limits of settings/limits.py (at most
4,000 x 4,000 pixels, under 8 MiB), so only the structure checks of handlers/image_structure.py stand
between it and a worker's time. `python -m reliability.crafted` prints each file's size and the CPU
time the handler's decoding spends on it (refused, or decoded):

    PYTHONPATH=. .venv/bin/python -m reliability.crafted [--raw]

--raw decodes with Pillow alone (no structure checks): the cost before the checks existed.
"""
from __future__ import annotations

import argparse
import io
import struct
import time
import zlib

import numpy as np
from PIL import Image, ImageOps


def _jpeg(array: np.ndarray, **options) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", **options)
    return buf.getvalue()


def _jpeg_segments(data: bytes):
    """(marker, start, end) of every segment before the first SOS, then of each SOS with its scan data."""
    pos, out = 2, []
    while pos < len(data):
        marker = data[pos + 1]
        if marker == 0xD9:
            break
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        end = pos + 2 + length
        if marker == 0xDA:  # entropy-coded data runs to the next marker that is not RSTn or a stuffed 0
            while True:
                end = data.index(b"\xff", end)
                if data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
                    end += 2
                    continue
                break
        out.append((marker, pos, end))
        pos = end
    return out


def jpeg_many_scans(side: int = 1000, extra_scans: int = 20_000) -> bytes:
    """The scan-repeating attack: a greyscale progressive JPEG whose last AC scan is repeated thousands of
    times (libjpeg only warns about the bogus progression and decodes every scan over every block)."""
    base = _jpeg(np.full((side, side), 128, np.uint8), progressive=True, quality=90)
    segments = _jpeg_segments(base)
    scans = [(s, e) for m, s, e in segments if m == 0xDA]
    # the smallest scan (an AC band of a flat image: one EOB run) is the cheapest to repeat
    start, end = min(scans, key=lambda se: se[1] - se[0])
    last_end = scans[-1][1]
    return base[:last_end] + base[start:end] * extra_scans + base[last_end:]


def jpeg_many_segments(count: int = 2_000_000) -> bytes:
    """A tiny baseline JPEG preceded by hundreds of thousands of empty COM segments (4 bytes each):
    Pillow walks the markers before SOF in Python."""
    base = _jpeg(np.full((28, 28), 128, np.uint8))
    return base[:2] + b"\xff\xfe\x00\x02" * count + base[2:]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_header(width: int, height: int, bit_depth: int = 8, colour: int = 0, interlace: int = 0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, interlace)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)


def png_many_idat(side: int = 1000, chunks: int = 500_000) -> bytes:
    """The image data of a 1000 x 1000 grey PNG cut into 500,000 IDAT chunks (a few bytes each)."""
    raw = zlib.compress(b"".join(b"\x00" + bytes(side) for _ in range(side)), 9)
    step = max(1, len(raw) // chunks)
    pieces = [raw[i:i + step] for i in range(0, len(raw), step)]
    pieces += [b""] * max(0, chunks - len(pieces))  # empty IDATs are legal
    return _png_header(side, side) + b"".join(_png_chunk(b"IDAT", p) for p in pieces) + _png_chunk(b"IEND", b"")


def png_many_ancillary(side: int = 28, chunks: int = 600_000) -> bytes:
    """A tiny PNG with 600,000 empty private ancillary chunks before its image data."""
    raw = zlib.compress(b"".join(b"\x00" + bytes(side) for _ in range(side)))
    return (_png_header(side, side) + _png_chunk(b"teXx", b"") * chunks + _png_chunk(b"IDAT", raw)
            + _png_chunk(b"IEND", b""))


def png_interlaced_16bit(side: int = 4000) -> bytes:
    """The largest legal PNG, interlaced (Adam7), 16-bit RGBA (128 MB of samples): the most work
    per pixel Pillow's PNG decoder does, in 0.1 MB."""
    rows = []
    adam7_passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    for x0, y0, dx, dy in adam7_passes:
        width, height = (side - x0 + dx - 1) // dx, (side - y0 + dy - 1) // dy
        rows += [b"\x00" + bytes(width * 8)] * height
    raw = zlib.compress(b"".join(rows), 6)
    return _png_header(side, side, 16, 6, 1) + _png_chunk(b"IDAT", raw) + _png_chunk(b"IEND", b"")


def gif_many_extensions(count: int = 4_000_000) -> bytes:
    """A 28 x 28 GIF whose first image is preceded by comment extensions of one-byte sub-blocks
    (3 bytes each after the first): Pillow reads sub-blocks one by one in Python."""
    buf = io.BytesIO()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(buf, format="GIF")
    data = buf.getvalue()
    after_palette = 13 + (3 * 2 ** ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    comment = b"\x21\xfe" + b"\x01x" * count + b"\x00"
    return data[:after_palette] + comment + data[after_palette:]


def gif_lzw_bomb(side: int = 4000) -> bytes:
    """The largest legal GIF (16 Mpx) of one colour: LZW makes it a few KB."""
    buf = io.BytesIO()
    Image.new("P", (side, side), 0).save(buf, format="GIF")
    return buf.getvalue()


def _tiff(entries: list[tuple[int, int, list[int]]], tail: bytes = b"") -> bytes:
    """A little-endian TIFF with one IFD. entries: (tag, type, values); type 3 SHORT, 4 LONG."""
    header = 8
    ifd_size = 2 + 12 * len(entries) + 4
    extra_at = header + ifd_size
    extra = b""
    ifd = struct.pack("<H", len(entries))
    for tag, kind, values in sorted(entries):
        packed = b"".join(struct.pack("<H" if kind == 3 else "<I", v) for v in values)
        if len(packed) <= 4:
            ifd += struct.pack("<HHI", tag, kind, len(values)) + packed.ljust(4, b"\x00")
        else:
            ifd += struct.pack("<HHII", tag, kind, len(values), extra_at + len(extra))
            extra += packed
    ifd += b"\x00\x00\x00\x00"
    return b"II*\x00" + struct.pack("<I", header) + ifd + extra + tail


def tiff_many_tiles(side: int = 4000, tile: int = 4) -> bytes:
    """A 4000 x 4000 grey uncompressed TIFF in 4 x 4 tiles, all pointing at one shared tile of
    data: 1,000,000 tiles, each its own decoder call in Pillow."""
    across = (side + tile - 1) // tile
    count = across * across
    data_at_placeholder = 0
    entries = [(256, 4, [side]), (257, 4, [side]), (258, 3, [8]), (259, 3, [1]), (262, 3, [1]),
               (277, 3, [1]), (322, 3, [tile]), (323, 3, [tile]),
               (324, 4, [data_at_placeholder] * count), (325, 3, [tile * tile] * count)]
    probe = _tiff(entries)
    data_at = len(probe)
    entries[8] = (324, 4, [data_at] * count)
    return _tiff(entries, bytes(tile * tile))


def tiff_many_strips(side: int = 4000) -> bytes:
    """A 4000 x 4000 grey TIFF of one-row strips, all pointing at one shared row."""
    entries = [(256, 4, [side]), (257, 4, [side]), (258, 3, [8]), (259, 3, [1]), (262, 3, [1]),
               (277, 3, [1]), (278, 4, [1]), (273, 4, [0] * side), (279, 4, [side] * side)]
    data_at = len(_tiff(entries))
    entries[7] = (273, 4, [data_at] * side)
    return _tiff(entries, bytes(side))


def bmp_rle8(side: int = 4000, single_rows: int = 900) -> bytes:
    """A 4000 x 4000 8-bit RLE BMP whose first 900 rows are runs of one pixel (2 bytes each), the
    rest runs of 250: Pillow's RLE decoder is Python, one loop turn per run."""
    body = bytearray()
    for y in range(side):
        body += b"\x01\x07" * side if y < single_rows else b"\xfa\x07" * (side // 250)
        body += b"\x00\x00"  # end of line
    body += b"\x00\x01"  # end of bitmap
    palette = b"".join(bytes((i, i, i, 0)) for i in range(256))
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 8, 1, len(body), 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(body), 0, 0, offset) + info + palette + bytes(body)


def webp_many_frames(frames: int = 20_000, side: int = 64) -> bytes:
    """An animated WebP of 20,000 small frames (we decode the first only)."""
    buf = io.BytesIO()
    images = [Image.new("L", (side, side), i % 256) for i in range(frames)]
    images[0].save(buf, format="WEBP", save_all=True, append_images=images[1:], lossless=True, method=0)
    return buf.getvalue()


def png_ztxt_bombs(chunks: int = 2_000) -> bytes:
    """A tiny PNG with 2,000 zTXt chunks, each 1 MB of text compressed to 1 KB."""
    text = b"k\x00\x00" + zlib.compress(bytes(1_000_000), 9)
    side = 28
    raw = zlib.compress(b"".join(b"\x00" + bytes(side) for _ in range(side)))
    return (_png_header(side, side) + _png_chunk(b"zTXt", text) * chunks + _png_chunk(b"IDAT", raw)
            + _png_chunk(b"IEND", b""))


def webp_lossless_noise(side: int = 2000) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (side, side), dtype=np.uint8)
    Image.fromarray(noise).save(buf, format="WEBP", lossless=True, method=0)
    return buf.getvalue()


def jpeg_largest_baseline(side: int = 4000) -> bytes:
    """The largest legal baseline JPEG, colour noise at quality 50 (cut to fit 8 MiB)."""
    rng = np.random.default_rng(0)
    return _jpeg(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), quality=50)

# ---- EXIF: ImageOps.exif_transpose reads a picture's whole EXIF into Python values and writes it back
ORIENTATION_TAG = 0x0112


def exif_blob(size: int, orientation: int = 6, nested: bool = False) -> bytes:
    """A little-endian EXIF (a TIFF structure) of about `size` bytes: Orientation and one RATIONAL
    array filling the rest (the costliest values to unpack: one fraction each). `nested`: the Exif,
    GPS and Interop IFDs hold the same array too, so Pillow unpacks it four times."""
    def entry(tag: int, kind: int, count: int, value: int) -> bytes:
        return struct.pack("<HHII", tag, kind, count, value)

    ifd0_size = 2 + 12 * (4 if nested else 2) + 4
    exif_at = 8 + ifd0_size
    gps_at = exif_at + 2 + 12 * 2 + 4
    interop_at = gps_at + 2 + 12 + 4
    data_at = interop_at + 2 + 12 + 4 if nested else exif_at
    count = max(1, (size - data_at) // 8)
    ifd0 = [struct.pack("<HHIH2x", ORIENTATION_TAG, 3, 1, orientation), entry(0xC000, 5, count, data_at)]
    tail = b""
    if nested:
        ifd0[1:1] = [entry(0x8769, 4, 1, exif_at), entry(0x8825, 4, 1, gps_at)]
        tail = (struct.pack("<H", 2) + entry(0x9001, 5, count, data_at) + entry(0xA005, 4, 1, interop_at) + bytes(4)
                + struct.pack("<H", 1) + entry(0x0002, 5, count, data_at) + bytes(4)
                + struct.pack("<H", 1) + entry(0x0002, 5, count, data_at) + bytes(4))
    return (b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(ifd0)) + b"".join(ifd0) + bytes(4)
            + tail + struct.pack("<II", 1, 3) * count)


def _small_png_chunks(side: int = 28) -> tuple[bytes, bytes]:
    """(signature and IHDR, IDAT and IEND) of a grey side x side PNG, to put chunks between."""
    raw = zlib.compress(b"".join(b"\x00" + bytes(side) for _ in range(side)))
    return _png_header(side, side), _png_chunk(b"IDAT", raw) + _png_chunk(b"IEND", b"")


def png_exif(size: int = 7_000_000, nested: bool = False) -> bytes:
    """A 28 x 28 PNG whose eXIf chunk holds an orientation and `size` bytes of EXIF."""
    head, tail = _small_png_chunks()
    return head + _png_chunk(b"eXIf", exif_blob(size, nested=nested)) + tail


def png_ztxt_exif_profile(size: int = 450_000) -> bytes:
    """A 28 x 28 PNG whose EXIF is ImageMagick's hex "Raw profile type exif" in a zTXt chunk: 0.9 MB of
    text (under Pillow's 1 MB per chunk) compressed to a few KB."""
    blob = exif_blob(size)
    text = f"\nexif\n{len(blob):8}\n{blob.hex()}\n".encode()
    head, tail = _small_png_chunks()
    return head + _png_chunk(b"zTXt", b"Raw profile type exif\x00\x00" + zlib.compress(text, 9)) + tail


def webp_exif(size: int = 7_000_000) -> bytes:
    """A 28 x 28 WebP whose EXIF chunk holds an orientation and `size` bytes of EXIF."""
    buf = io.BytesIO()
    Image.new("L", (28, 28), 0).save(buf, format="WEBP", lossless=True, exif=b"Exif\x00\x00" + exif_blob(size))
    return buf.getvalue()


def jpeg_exif_segments(size: int = 7_000_000) -> bytes:
    """A 28 x 28 JPEG whose EXIF is cut into ~108 APP1 segments of 64 KB, which Pillow joins into one."""
    base = _jpeg(np.full((28, 28), 128, np.uint8))
    blob = exif_blob(size)
    step = 65_000
    segments = b"".join(b"\xff\xe1" + struct.pack(">H", 2 + 6 + len(blob[i:i + step])) + b"Exif\x00\x00"
                        + blob[i:i + step] for i in range(0, len(blob), step))
    return base[:2] + segments + base[2:]


def tiff_exif_ifd(size: int = 7_000_000, side: int = 28) -> bytes:
    """A 28 x 28 grey TIFF with an orientation whose Exif IFD holds a RATIONAL array of `size` bytes:
    Pillow reads the Exif IFD whole when the pixels load, with or without exif_transpose."""
    count = size // 8
    ifd0 = [(256, 4, side), (257, 4, side), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 0),
            (ORIENTATION_TAG, 3, 6), (278, 4, side), (279, 4, side * side), (0x8769, 4, 0)]
    exif_at = 8 + 2 + 12 * len(ifd0) + 4
    array_at = exif_at + 2 + 12 + 4
    pixels_at = array_at + 8 * count
    values = {273: pixels_at, 0x8769: exif_at}
    out = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(ifd0))
    for tag, kind, value in ifd0:
        value = values.get(tag, value)
        field = struct.pack("<H2x", value) if kind == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, 1) + field
    out += bytes(4) + struct.pack("<H", 1) + struct.pack("<HHII", 0x9001, 5, count, array_at) + bytes(4)
    return out + struct.pack("<II", 1, 3) * count + bytes(side * side)


CATALOGUE = {
    "jpeg_1000px_20000_scans": lambda: jpeg_many_scans(1000, 20_000),
    "jpeg_4000px_20000_scans": lambda: jpeg_many_scans(4000, 20_000),
    "jpeg_2000000_com_segments": jpeg_many_segments,
    "jpeg_largest_baseline_noise": jpeg_largest_baseline,
    "png_500000_idat_chunks": png_many_idat,
    "png_600000_ancillary_chunks": png_many_ancillary,
    "png_4000px_interlaced_rgba16": png_interlaced_16bit,
    "gif_4000000_comment_subblocks": gif_many_extensions,
    "gif_4000px_lzw_bomb": gif_lzw_bomb,
    "tiff_4000px_1M_tiles": tiff_many_tiles,
    "tiff_4000px_4000_strips": tiff_many_strips,
    "bmp_4000px_rle8_3_7M_runs": bmp_rle8,
    "webp_2000px_lossless_noise": webp_lossless_noise,
    # just inside each structure limit: must decode within the budget
    "jpeg_4000px_99_scans": lambda: jpeg_many_scans(4000, 99 - 6),
    "png_1000px_19990_idat_chunks": lambda: png_many_idat(1000, 19_990),
    "gif_19990_comment_subblocks": lambda: gif_many_extensions(19_990),
    "tiff_4000px_15625_tiles": lambda: tiff_many_tiles(4000, 32),
    "bmp_4000px_rle8_0_9MB": lambda: bmp_rle8(4000, 100),
    "webp_20000_frames": webp_many_frames,
    "png_2000_ztxt_1mb_each": png_ztxt_bombs,
    "png_7mb_exif_orientation": png_exif,
    "png_ztxt_0_45mb_exif_profile": png_ztxt_exif_profile,
    "webp_7mb_exif_orientation": webp_exif,
    "jpeg_7mb_exif_in_108_segments": jpeg_exif_segments,
    "tiff_7mb_exif_ifd": tiff_exif_ifd,
    # just inside the EXIF limit, and unpacked four times over (IFD0, Exif, GPS, Interop)
    "png_64kib_exif_nested": lambda: png_exif(65_536, nested=True),
}


def cpu_seconds(function, *args) -> tuple[float, object]:
    start = time.process_time()
    try:
        result = function(*args)
    except Exception as err:  # noqa: BLE001 - the outcome is what we report
        result = err
    return time.process_time() - start, result


def raw_decode(data: bytes):
    """--raw only: what Pillow alone spends on the file (open, load, exif_transpose: the handler's
    calls without its checks). Switches Pillow's decompression-bomb guard
    off for this measuring process only; the handlers keep it on (handlers/image_decoding.py maps
    DecompressionBombError to 413 image_too_large) and never set Image.MAX_IMAGE_PIXELS."""
    Image.MAX_IMAGE_PIXELS = None
    image = Image.open(io.BytesIO(data))
    image.load()
    return ImageOps.exif_transpose(image)  # as the handler always did


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw", action="store_true", help="Pillow alone, no structure checks")
    parser.add_argument("names", nargs="*")
    args = parser.parse_args(argv)
    if not args.raw:
        from handlers.image_decoding import open_image
        from settings.limits import LIMITS
    for name, make in CATALOGUE.items():
        if args.names and name not in args.names:
            continue
        data = make()
        seconds, result = cpu_seconds(raw_decode if args.raw else (lambda d: open_image(d, LIMITS)), data)
        outcome = (f"{type(result).__name__}: {getattr(result, 'code', '')} {str(result)[:90]}"
                   if isinstance(result, Exception) else f"decoded {result.size} {result.mode}")
        print(f"{name:32s} {len(data) / 1e6:6.2f} MB  {seconds:7.3f} s CPU  {outcome}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
