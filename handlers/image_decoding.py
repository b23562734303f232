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

# We enforce our own limits from the header; PIL's global guard would raise mid-decode instead.
Image.MAX_IMAGE_PIXELS = None


def open_image(data: bytes, limits: InputLimits) -> Image.Image:
    """Decode one image, EXIF orientation applied, first frame only."""
    if not data:
        raise InputError(400, "empty_body", "The request carried no image data. Send the image "
                         f"file as the request body, e.g. curl -T digit.png URL ({SUPPORTED_TEXT}).")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InputError(415, "not_an_image", f"The data is not an image this server can read "
                         f"({len(data)} bytes, starting {bytes(data[:8])!r}). Send {SUPPORTED_TEXT}.") from None
    except Exception as err:  # PIL raises assorted errors on broken headers
        raise InputError(400, "corrupt_image", f"The image header could not be read ({err}). "
                         "Send a complete, valid image file.") from None
    if image.format not in SUPPORTED_FORMATS:
        raise InputError(415, "unsupported_format", f"{image.format} images are not supported. "
                         f"Send {SUPPORTED_TEXT}.")
    width, height = image.size
    if width < 1 or height < 1:
        raise InputError(400, "empty_image", f"The image is {width}x{height} pixels. Send an image "
                         "with at least one pixel.")
    if max(width, height) > limits.max_image_side or width * height > limits.max_image_pixels:
        raise InputError(413, "image_too_large", f"The image declares {width}x{height} pixels; "
                         f"the limit is {limits.max_image_side} pixels a side and "
                         f"{limits.max_image_pixels:,} pixels in all. Downscale it before sending.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.seek(0)
            image.load()
            return ImageOps.exif_transpose(image)
    except Exception as err:  # truncated data, bad chunks, broken EXIF...
        raise InputError(400, "corrupt_image", f"The {image.format} image could not be decoded "
                         f"({type(err).__name__}: {err}). It may be truncated or corrupt; "
                         "send the complete file.") from None
