"""Image bytes -> PIL image, refusing what is not a sane image before decoding its pixels.

The header is read first (PIL opens lazily), so a decompression bomb or an absurd size is refused
from its declared dimensions, without allocating the pixels.
"""
from __future__ import annotations

import io
import re
import struct
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from handlers.errors import InputError
from model_defs.preprocessing import DIGIT_WORKING_SIDE
from settings.limits import InputLimits

SUPPORTED_FORMATS = {"PNG", "JPEG", "MPO", "BMP", "GIF", "WEBP", "TIFF"}
SUPPORTED_TEXT = "PNG, JPEG, BMP, GIF (first frame), WebP or TIFF"
# a urlencoded web form: what `curl -d image=digit.png` sends instead of the file
WEB_FORM = re.compile(rb"^[A-Za-z0-9_.-]+=[^\x00-\x08\x0e-\x1f]*$")
PIL_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")  # MPO: PIL opens multi-picture JPEGs as JPEG

# Formats people really send that we do not decode, recognised by their signature for a clear 415.
UNSUPPORTED_SIGNATURES = (
    (4, (b"ftypheic", b"ftypheix", b"ftyphevc", b"ftypmif1", b"ftypmsf1"), "HEIC/HEIF (iPhone photo; "
     "export as JPEG, or set Camera > Formats > Most Compatible)"),
    (4, (b"ftypavif",), "AVIF"),
    (0, (b"%PDF",), "PDF"),
    (0, (b"%!PS",), "PostScript/EPS"),
    (0, (b"<svg", b"<?xml"), "SVG/XML"),
    (0, (b"\x00\x00\x01\x00",), "ICO"),
    (0, (b"8BPS",), "Photoshop PSD"),
    (0, (b"\x00\x00\x00\x0cjP  ", b"\xff\x4f\xff\x51"), "JPEG 2000"),
    (0, (b"qoif",), "QOI"),
)


# Pixel modes that model_defs.preprocessing.to_grayscale turns into grey levels (PIL converts them
# to L, or they are 16-bit/float samples we scale). Valid files in other modes are refused with a
# 415, never a crash: TIFF can hold CIELab ("LAB"), which PIL decodes but cannot convert.
SUPPORTED_MODES = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr",
                   "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
MODE_NAMES = {"LAB": "CIELab colour", "HSV": "HSV colour"}


SUPPORTED_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"),
                        (b"GIF89a", "GIF"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"BM", "BMP"))


def sniff_supported(data: bytes) -> str | None:
    head = bytes(data[:16])
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((name for sig, name in SUPPORTED_SIGNATURES if head.startswith(sig)), None)


def sniff_unsupported(data: bytes) -> str | None:
    head = bytes(data[:32]).lstrip()
    for offset, signatures, name in UNSUPPORTED_SIGNATURES:
        if any(head[offset:offset + len(sig)] == sig for sig in signatures):
            return name
    return None

# Pillow's own decompression-bomb guard stays on (Image.MAX_IMAGE_PIXELS, 89 Mpx; an error past
# twice that): our limits from the header are far below it, so it never fires on an image we
# accept, and where it fires first (Image.open of a 2^31 x 2^31 header) it maps to image_too_large.


def open_image(data: bytes, limits: InputLimits) -> Image.Image:
    """Decode one image, EXIF orientation applied, first frame only."""
    return load_pixels(open_header(data, limits))


def open_header(data: bytes, limits: InputLimits) -> Image.Image:
    """Read only the header: format and dimensions, checked against the limits. No pixels yet."""
    if not data:
        raise InputError(400, "empty_body", "The request carried no image data. Send the image "
                         f"file as the request body, e.g. curl -T digit.png URL ({SUPPORTED_TEXT}).")
    check_structure(data, limits)  # decoding cost from the framing, before Pillow parses anything
    try:
        # Only our formats' parsers ever see the bytes (no EPS/Ghostscript, no exotic plugins).
        with warnings.catch_warnings():  # PIL warns about damaged headers: we judge them ourselves
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data), formats=PIL_FORMATS)
    except UnidentifiedImageError:
        claimed = sniff_supported(data)
        if claimed:
            raise InputError(400, "corrupt_image", f"The data starts like a {claimed} file but its header is "
                             "invalid (zero or impossible dimensions, or damaged). "
                             "Send a complete, valid image.") from None
        known = sniff_unsupported(data)
        if known:
            raise InputError(415, "unsupported_format", f"{known} images are not supported. "
                             f"Send {SUPPORTED_TEXT}.") from None
        hint = ""
        if WEB_FORM.match(bytes(data[:256])):  # curl -d image=digit.png sends the text, not the file
            hint = (" It looks like a web form (name=value), not a file: send the file itself, "
                    "curl -T digit.png URL or --data-binary @digit.png.")
        raise InputError(415, "not_an_image", f"The data is not an image this server can read "
                         f"({len(data)} bytes, starting {bytes(data[:8])!r}). Send {SUPPORTED_TEXT}.{hint}") from None
    except Image.DecompressionBombError as err:
        raise InputError(413, "image_too_large", f"The image declares too many pixels ({err}); the limit "
                         f"is {limits.max_image_side} pixels a side and {limits.max_image_pixels:,} pixels "
                         "in all. Downscale it before sending.") from None
    except Exception as err:  # PIL raises assorted errors on broken headers
        raise InputError(400, "corrupt_image", f"The image header could not be read ({err}). "
                         "Send a complete, valid image file.") from None
    if image.format not in SUPPORTED_FORMATS:
        raise InputError(415, "unsupported_format", f"{image.format} images are not supported. "
                         f"Send {SUPPORTED_TEXT}.")
    check_size(image.size, limits, what=f"The {image.format} image declares")
    check_mode(image)
    return image


def check_mode(image: Image.Image) -> None:
    if image.mode not in SUPPORTED_MODES:
        what = MODE_NAMES.get(image.mode, "a pixel layout")
        raise InputError(415, "unsupported_format", f"The {image.format} image is in {what} (mode "
                         f"{image.mode}), which this server cannot convert to grey levels. Save it "
                         "as RGB or grayscale and send it again.")


def check_size(size: tuple[int, int], limits: InputLimits, what: str = "The image is") -> None:
    width, height = size
    if width < 1 or height < 1:
        raise InputError(400, "empty_image", f"{what} {width}x{height} pixels. Send an image "
                         "with at least one pixel.")
    if max(width, height) > limits.max_image_side or width * height > limits.max_image_pixels:
        raise InputError(413, "image_too_large", f"{what} {width}x{height} pixels; "
                         f"the limit is {limits.max_image_side} pixels a side and "
                         f"{limits.max_image_pixels:,} pixels in all. Downscale it before sending.")


def check_image_count(count: int, limits: InputLimits) -> None:
    """413 too_many_images when one request carries more images than max_images_per_request."""
    if count > limits.max_images_per_request:
        raise InputError(413, "too_many_images", f"{count} images in one request; the limit is "
                         f"{limits.max_images_per_request}. Split them over several requests.")


def check_request_pixels(total: int, limits: InputLimits) -> None:
    """413 too_many_pixels when one request's images hold more than max_pixels_per_request."""
    if total > limits.max_pixels_per_request:
        raise InputError(413, "too_many_pixels", f"The request's images hold {total:,} pixels in all; "
                         f"the limit is {limits.max_pixels_per_request:,} per request. Downscale "
                         "them or split them over several requests.")


def load_pixels(image: Image.Image) -> Image.Image:
    """Decode the pixels of an image opened by `open_header`, EXIF orientation applied."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.seek(0)
            draft_large_jpeg(image)
            image.load()
            decoded = ImageOps.exif_transpose(image)
    except Image.DecompressionBombError as err:  # a frame larger than its header said (GIF, WebP)
        raise InputError(413, "image_too_large", f"The {image.format} image holds a frame with too many "
                         f"pixels ({err}). Downscale it before sending.") from None
    except Exception as err:  # truncated data, bad chunks, broken EXIF...
        raise InputError(400, "corrupt_image", f"The {image.format} image could not be decoded "
                         f"({type(err).__name__}: {err}). It may be truncated or corrupt; "
                         "send the complete file.") from None
    check_mode(decoded)  # a decoder may settle the mode only now
    return decoded


JPEG_DRAFT_SCALES = (8, 4, 2)  # the reduced scales libjpeg decodes at for Pillow's draft (in the DCT)


def draft_large_jpeg(image: Image.Image) -> None:
    """Before `load`: a large JPEG is decoded at 1/2, 1/4 or 1/8 scale in the DCT and in luma only (mode
    L), the smallest scale that keeps its long side at least DIGIT_WORKING_SIDE, to which canonicalize
    shrinks it anyway (model_defs/preprocessing.py). A 640x480 phone photo: 320x240 L, 0.4 ms instead
    of 0.75 ms for 640x480 RGB plus 0.35 ms for its grey conversion (CPU, medians of 300 photos).
    Other formats, and JPEGs under 2 x DIGIT_WORKING_SIDE - 1 a side, decode in full as before."""
    if image.format not in ("JPEG", "MPO"):
        return
    scale = jpeg_draft_scale(image.size)
    if scale > 1:
        width, height = image.size
        image.draft("L", (width // scale, height // scale))  # Pillow picks the scale s with w // (w // s) >= s


def jpeg_draft_scale(size: tuple[int, int]) -> int:
    """The largest of 8, 4, 2 that keeps the long side of a width x height JPEG at least
    DIGIT_WORKING_SIDE (libjpeg rounds up: ceil(side / scale)), and the short side at least one
    pixel; 1 when none does."""
    long_side, short_side = max(size), min(size)
    return next((scale for scale in JPEG_DRAFT_SCALES
                 if -(-long_side // scale) >= DIGIT_WORKING_SIDE and short_side >= scale), 1)


# ---- decoding cost from the framing --------------------------------------------------------
# Refuse images whose *structure* would cost a worker seconds to decode, before any decoding.
#
# Dimensions and byte count do not bound decoding time: a 1,000 x 1,000 progressive JPEG of 0.24 MB
# with 20,000 repeated scans took Pillow 1.2 s of CPU, a 4,000 x 4,000 one (0.7 MB) 19 s, past
# TorchServe's response timeout, which then kills the model's only worker (issue 13). Pillow also
# walks some structures in Python, one loop turn each: JPEG segments before the frame, PNG chunks,
# GIF extension sub-blocks, uncompressed TIFF strips and tiles, BMP RLE runs; 8 MB of them cost
# 0.8-3.5 s. Each walker here reads only the container's framing (no pixels, no decompression), in
# bounded steps: it stops at the first limit passed, so it costs milliseconds whatever it is sent.
# The limits and the measurements behind them are in settings/limits.py (InputLimits);
# `python -m reliability.crafted` measures every crafted worst case (RELIABILITY.md).
# WebP needs no walker: libwebp parses an animation's frames in C, and we decode the first only
# (20,000 frames: 2 ms).
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
    """Count chunks: Pillow reads each (IDAT, text, private) with a Python loop turn (~2 us)."""
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
