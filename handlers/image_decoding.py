"""Image bytes -> PIL image, refusing what is not a sane image before decoding its pixels.

The header is read first (PIL opens lazily), so a decompression bomb or an absurd size is refused
from its declared dimensions, without allocating the pixels.
"""
from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from handlers.errors import InputError
from serving.settings import InputLimits

SUPPORTED_FORMATS = {"PNG", "JPEG", "MPO", "BMP", "GIF", "WEBP", "TIFF"}
SUPPORTED_TEXT = "PNG, JPEG, BMP, GIF (first frame), WebP or TIFF"
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

# We enforce our own limits from the header; PIL's global guard would raise mid-decode instead.
Image.MAX_IMAGE_PIXELS = None


def open_image(data: bytes, limits: InputLimits) -> Image.Image:
    """Decode one image, EXIF orientation applied, first frame only."""
    return load_pixels(open_header(data, limits))


def open_header(data: bytes, limits: InputLimits) -> Image.Image:
    """Read only the header: format and dimensions, checked against the limits. No pixels yet."""
    if not data:
        raise InputError(400, "empty_body", "The request carried no image data. Send the image "
                         f"file as the request body, e.g. curl -T digit.png URL ({SUPPORTED_TEXT}).")
    try:
        # Only our formats' parsers ever see the bytes (no EPS/Ghostscript, no exotic plugins).
        with warnings.catch_warnings():  # PIL warns about damaged headers: we judge them ourselves
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data), formats=PIL_FORMATS)
    except UnidentifiedImageError:
        claimed = sniff_supported(data)
        if claimed:
            raise InputError(400, "corrupt_image", f"The data starts like a {claimed} file but its header is "
                             "invalid (zero or impossible dimensions, or damaged). Send a complete, valid image.") from None
        known = sniff_unsupported(data)
        if known:
            raise InputError(415, "unsupported_format", f"{known} images are not supported. "
                             f"Send {SUPPORTED_TEXT}.") from None
        raise InputError(415, "not_an_image", f"The data is not an image this server can read "
                         f"({len(data)} bytes, starting {bytes(data[:8])!r}). Send {SUPPORTED_TEXT}.") from None
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


def load_pixels(image: Image.Image) -> Image.Image:
    """Decode the pixels of an image opened by `open_header`, EXIF orientation applied."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.seek(0)
            image.load()
            decoded = ImageOps.exif_transpose(image)
    except Exception as err:  # truncated data, bad chunks, broken EXIF...
        raise InputError(400, "corrupt_image", f"The {image.format} image could not be decoded "
                         f"({type(err).__name__}: {err}). It may be truncated or corrupt; "
                         "send the complete file.") from None
    check_mode(decoded)  # a decoder may settle the mode only now
    return decoded
