"""Image bytes -> PIL image, refusing what is not a sane image before decoding its pixels.

The file's framing is walked first (handlers/image_structure.py: what would cost seconds to decode),
then the header read (PIL opens lazily), so a decompression bomb or an absurd size is refused from
its declared dimensions, without allocating the pixels.
"""
from __future__ import annotations

import io
import re
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from handlers.errors import InputError
from handlers.image_structure import check_read_metadata, check_structure
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
    check_read_metadata(image, limits)  # the EXIF read with the header (WebP's), before exif_transpose parses it
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
    shrinks it anyway (model_defs/preprocessing.py): a phone photo then costs a fraction of a full
    colour decode and its grey conversion. Other formats, and JPEGs under 2 x DIGIT_WORKING_SIDE - 1
    a side, decode in full."""
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
