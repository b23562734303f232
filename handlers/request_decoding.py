"""One TorchServe request -> the images it carries (encoded bytes, or pixel arrays).

What clients send, and how it arrives here:
- raw body, any Content-Type except JSON (curl -T x.png, --data-binary with -H 'Content-Type: ...'):
  TorchServe hands us {"body": bytes}
- multipart form, any field name (curl -F data=@x.png, -F file=@x.png): {"<field>": bytes}; several
  image parts under distinct names (curl -F a=@x.png -F b=@y.png) -> a list of results, in part order.
  TorchServe 0.12.0's worker keeps one value per field name (ts/service.py, a dict): of parts that
  repeat a name (-F file=@x.png -F file=@y.png) only the last reaches us, and nothing here can tell.
- a NumPy .npy file, as the raw body (any Content-Type) or as a part: uint8 [N, H, W] -> a list of
  results, [H, W] -> one (handlers/npy_decoding.py says what it accepts)
- JSON (Content-Type: application/json):
    {"image": "<base64>"} or {"image": "data:image/png;base64,..."}
    {"pixels": [[...], ...], "range": "0-255" | "0-1"}  (range optional, see `pixels_to_array`)
    {"instances": [<any of the above, or a bare base64 string>, ...]}  -> a list of results
- a POST without Content-Type: curl --data-binary sends application/x-www-form-urlencoded, which
  TorchServe decodes as a form (often {}): 400 missing_content_type, saying which header to send.
- a multipart body whose parts do not use the boundary its header names arrives as {} too: 400
  bad_multipart (a Content-Type was sent; the body does not match it).
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
import struct
from typing import Union

import numpy as np

from handlers.errors import InputError
from handlers.image_decoding import check_image_count, check_size, sniff_unsupported
from handlers.npy_decoding import is_npy, npy_to_arrays
from settings.limits import InputLimits

ImageSource = Union[bytes, np.ndarray]


@dataclasses.dataclass
class PendingRequest:
    """One request of a batch while the handler decodes it: its images at the current step (opened,
    then canonical), their slots in the batch's CanonicalStack while they are being framed, and
    whether the client sent a list (then it gets a list of answers)."""
    idx: int
    explain: bool
    images: list = dataclasses.field(default_factory=list)
    is_list: bool = False
    slots: list[int] = dataclasses.field(default_factory=list)


DATA_URI = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^,;]*)*?);base64,", re.IGNORECASE)
DATA_URI_HEAD = 1024  # a data URI's "data:<type>;<params>;base64," must end within this many characters
MAX_JSON_DEPTH = 8
# What the JSON of any request we accept holds at most, per image it may carry (max_images_per_request,
# plus one for the document itself): objects ({"image": ...}, {"pixels": ...}, with room for a few
# fields of the client's own) and members ("key": value; a data URI's "data:" counts too, as the count
# is over the raw text). Lists: the pixel rows of max_images_per_request images of max_image_side
# rows, each image's list of rows, and a few more ("instances"). Counted in C over the raw body
# before parsing it, so a body of millions of small objects or lists (json.loads then walks 8 MB of
# them in 0.5-1.9 s) is refused in milliseconds.
JSON_OBJECTS_PER_IMAGE = 4
JSON_MEMBERS_PER_IMAGE = 16
JSON_SPARE_LISTS = 8


CONTAINERS = {dict, list}  # what json.loads makes lists and objects of


def _nested(value) -> list:
    """The lists and objects directly inside a list or an object."""
    items = value.values() if type(value) is dict else value
    if CONTAINERS.isdisjoint(map(type, items)):  # a row of numbers: looked at in C
        return []
    return [item for item in items if type(item) in CONTAINERS]


def json_depth(value) -> int:
    """Levels of nested lists and objects, every element looked at, level by level (no recursion);
    stops counting past MAX_JSON_DEPTH. Scalars do not count: {"pixels": [[0]]} is 3 deep."""
    depth, level = 0, [value] if type(value) in CONTAINERS else []
    while level and depth <= MAX_JSON_DEPTH:
        depth += 1
        level = [child for item in level for child in _nested(item)]
    return depth


def check_json_counts(raw: bytes | str, limits: InputLimits) -> None:
    """Refuse (400 json_too_complex), before parsing, JSON holding more objects, members or lists than
    any request within the limits can: see JSON_OBJECTS_PER_IMAGE. Counts brackets and colons inside
    strings too (base64 has none), so it errs towards parsing."""
    brace, colon, bracket = (b"{", b":", b"[") if isinstance(raw, (bytes, bytearray)) else ("{", ":", "[")
    documents = limits.max_images_per_request + 1
    bounds = (
        (brace, "objects ({...})", JSON_OBJECTS_PER_IMAGE * documents),
        (colon, 'members ("key": value)', JSON_MEMBERS_PER_IMAGE * documents),
        (bracket, "lists ([...])", limits.max_images_per_request * (limits.max_image_side + 1) + JSON_SPARE_LISTS),
    )
    for char, what, bound in bounds:
        count = raw.count(char)
        if count > bound:
            raise InputError(400, "json_too_complex", f"The JSON holds {count:,} {what}; a request of at most "
                             f"{limits.max_images_per_request} images, each {{\"image\": \"<base64>\"}} or "
                             f"{{\"pixels\": [[...], ...]}} of at most {limits.max_image_side} rows, holds at most "
                             f"{bound:,}. Send {{\"instances\": [...]}} of at most {limits.max_images_per_request} "
                             "images (several requests for more), or the pixels as one .npy array.")


def parse_json(raw: bytes | str, limits: InputLimits):
    check_json_counts(raw, limits)
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise InputError(400, "malformed_json", f"The JSON body could not be parsed ({err}). "
                         'Send e.g. {"image": "<base64 PNG>"}.') from None
    except ValueError:  # an integer longer than Python will parse (4,300 digits)
        raise InputError(400, "malformed_json", "The JSON body holds a number with thousands of digits. "
                         "Send pixel values as numbers in 0-255 or 0-1, or the image as "
                         '{"image": "<base64 PNG>"}.') from None


def decode_base64(text: str) -> bytes:
    match = DATA_URI.match(text, 0, DATA_URI_HEAD)
    if match:
        text = text[match.end():]
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InputError(400, "bad_base64", "The image string is not valid base64. Send the file's "
                         'bytes base64-encoded, or a data URI "data:image/png;base64,...".') from None
    if not data:
        raise InputError(400, "empty_body", "The base64 image string is empty.")
    return data


def pixels_to_array(pixels, value_range: str | None, limits: InputLimits) -> np.ndarray:
    """A JSON H x W array of numbers -> uint8 array.

    `range` says how to read the values: "0-255" (integers or floats, rounded) or "0-1" (floats,
    scaled by 255). Without it: every value <= 1 means 0-1, anything larger means 0-255.
    The height and the first row's width are checked against the limits before any value is looked at.
    """
    if not isinstance(pixels, list) or not pixels or not isinstance(pixels[0], list):
        raise InputError(422, "bad_pixels", '"pixels" must be a non-empty list of rows (H x W numbers).')
    width = len(pixels[0])
    if width:
        check_size((width, len(pixels)), limits, what='"pixels" is')
    if not all(isinstance(r, list) for r in pixels):
        raise InputError(422, "bad_pixels", '"pixels" must be a non-empty list of rows (H x W numbers).')
    if width == 0 or any(len(row) != width for row in pixels):
        raise InputError(422, "bad_pixels", f'"pixels" rows must all have the same, non-zero length; '
                         f"row lengths seen: {sorted({len(r) for r in pixels})[:5]}.")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for row in pixels for v in row):
        raise InputError(422, "bad_pixels", '"pixels" must hold numbers only (no strings, lists or booleans).')
    try:
        values = np.asarray(pixels, dtype=np.float64)
    except OverflowError:  # JSON integers of any size parse; past 1.8e308 they are no float
        raise InputError(422, "bad_pixels", '"pixels" holds a number too large to be a pixel value; '
                         "send values in 0-255 or 0-1.") from None
    if not np.isfinite(values).all():
        raise InputError(422, "bad_pixels", '"pixels" contains NaN or infinity; send finite numbers.')
    if value_range is None:
        value_range = "0-1" if values.max() <= 1.0 else "0-255"
    if value_range not in ("0-1", "0-255"):
        raise InputError(422, "bad_pixels", f'"range" must be "0-255" or "0-1", got {clip(repr(value_range))}.')
    top = 1.0 if value_range == "0-1" else 255.0
    if values.min() < 0 or values.max() > top:
        raise InputError(422, "bad_pixels", f'"pixels" values must lie in {value_range}; '
                         f"found {values.min():g}..{values.max():g}.")
    return np.rint(values * (255.0 / top)).astype(np.uint8)


def clip(text: str, limit: int = 60) -> str:
    """What a message quotes of the client's own input: at most `limit` characters."""
    return text if len(text) <= limit else text[:limit] + "..."


JSON_TYPES = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
              list: "a list", dict: "an object"}


def _instance_to_source(instance, limits: InputLimits) -> ImageSource:
    if isinstance(instance, str):
        return decode_base64(instance)
    if isinstance(instance, dict):
        if "image" in instance or "b64" in instance:
            value = instance.get("image", instance.get("b64"))
            if not isinstance(value, str):
                raise InputError(422, "bad_image_field", '"image" must be a base64 string or a data URI.')
            return decode_base64(value)
        if "pixels" in instance:
            return pixels_to_array(instance["pixels"], instance.get("range"), limits)
    raise InputError(422, "bad_json_fields", 'A JSON image must be {"image": "<base64>"}, '
                     '{"pixels": [[...]]} or a base64 string; got '
                     f"{JSON_TYPES.get(type(instance), type(instance).__name__)}{_keys(instance)}.")


def _keys(value) -> str:
    if not isinstance(value, dict):
        return ""
    return f" with keys {clip(repr(sorted(value)[:5]), 200)}" if value else " with no keys"


def json_to_sources(document, limits: InputLimits) -> tuple[list[ImageSource], bool]:
    """Returns (images, is_list): is_list when the client sent {"instances": [...]}."""
    if json_depth(document) > MAX_JSON_DEPTH:
        raise InputError(400, "json_too_deep", f"The JSON is nested deeper than {MAX_JSON_DEPTH} levels; "
                         'send {"image": ...}, {"pixels": [[...]]} or {"instances": [...]}.')
    if isinstance(document, dict) and "instances" in document:
        instances = document["instances"]
        if not isinstance(instances, list) or not instances:
            raise InputError(422, "bad_instances", '"instances" must be a non-empty list of images.')
        check_image_count(len(instances), limits)
        return [_instance_to_source(item, limits) for item in instances], True
    return [_instance_to_source(document, limits)], False


def looks_like_json(data: bytes) -> bool:
    head = bytes(data[:64]).lstrip()
    return head[:1] in (b"{", b"[")


PREFERRED_FIELDS = ("body", "data", "file", "image", "img")
IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"BM", b"GIF8", b"RIFF", b"II*\x00", b"MM\x00*")
BMP_INFO_HEADER_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}  # OS/2 1.x and 2.x, Windows 3.x to V5


def pick_field(row: dict):
    """The part of a request that carries the image(s).

    Raw bodies arrive as "body"; multipart forms as one entry per field, under any name. A form may
    also carry text fields (curl -F note=hi -F file=@x.png): take a well-known name first, else the
    first field that looks like an image or JSON, else the first field.
    """
    for name in PREFERRED_FIELDS:
        if row.get(name) is not None:
            return row[name]
    for value in row.values():
        if isinstance(value, (dict, list)):
            return value
        if looks_like_image(value) or (isinstance(value, (bytes, bytearray)) and looks_like_json(value)):
            return value
    return next(iter(row.values()))


def looks_like_image(value) -> bool:
    """A form part that carries an image: a known image or .npy signature, or the signature of an
    image format we refuse (its part then gets that format's 415, not silence)."""
    if not isinstance(value, (bytes, bytearray)):
        return False
    head = bytes(value[:32])
    if head.startswith(b"BM"):  # two letters a text field may start with: a BMP's info header too
        return len(head) >= 18 and struct.unpack_from("<I", head, 14)[0] in BMP_INFO_HEADER_SIZES
    return head.startswith(IMAGE_MAGIC) or is_npy(head) or sniff_unsupported(head) is not None


def image_parts(row: dict) -> list[bytes]:
    """The form parts that carry images, in the order the client sent them (text fields left out)."""
    return [bytes(value) for value in row.values() if looks_like_image(value)]


def parts_to_sources(parts: list[bytes], limits: InputLimits) -> list[ImageSource]:
    """Several image parts of one form -> one image each (a .npy part must then hold one [H, W] image)."""
    check_image_count(len(parts), limits)
    sources: list[ImageSource] = []
    for number, part in enumerate(parts, start=1):
        if not is_npy(part):
            sources.append(part)
            continue
        arrays, is_list = npy_to_arrays(part, limits)
        if is_list:
            raise InputError(422, "bad_array_shape", f"Part {number} of {len(parts)} is a .npy array of "
                             "several images; beside other image parts each part must be one image. Send "
                             "the [N, H, W] array as the request's only part, or one [H, W] array per part.")
        sources.extend(arrays)
    return sources


def _boundary(content_type: str | None) -> str:
    match = re.search(r"boundary=\"?([^\";]*)", content_type or "", re.IGNORECASE)
    return f"boundary={match.group(1)[:70]!r}" if match else "no boundary= given"


def request_to_sources(row: dict, content_type: str | None, limits: InputLimits) -> tuple[list[ImageSource], bool]:
    """The images in one TorchServe request row, and whether the client sent a list."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if not row and media_type.startswith("multipart/"):
        raise InputError(400, "bad_multipart", f"The {media_type} body held no part this server could "
                         "read: its parts must be separated by the boundary its Content-Type header names "
                         f"({_boundary(content_type)}), and at least one must carry the image. Let the "
                         "client build the form (curl -F data=@digit.png URL) rather than setting the "
                         "Content-Type header by hand.")
    if not row or media_type == "application/x-www-form-urlencoded":
        raise InputError(400, "missing_content_type", "The request body could not be read: a POST "
                         "without a Content-Type header is decoded as a web form. Send the image "
                         "with a Content-Type header (curl -T digit.png URL, or --data-binary "
                         "@digit.png -H 'Content-Type: image/png'), as multipart form "
                         "(curl -F data=@digit.png URL), or as JSON with -H 'Content-Type: application/json'.")
    parts = image_parts(row)
    if len(parts) > 1:
        return parts_to_sources(parts, limits), True
    value = pick_field(row)
    if is_npy(value):
        return npy_to_arrays(bytes(value), limits)
    if not isinstance(value, (bytes, bytearray, memoryview, str)) or (
            isinstance(value, str) and media_type == "application/json"):
        # A JSON value TorchServe parsed itself (any of them: null, a number, a string...), as its worker
        # does for application/json unless decode_input_request=false.
        return json_to_sources(value, limits)
    if isinstance(value, str):  # a text/* body TorchServe decoded (same switch)
        value = value.encode("utf-8", "surrogatepass")
    value = bytes(value)
    is_json = media_type in ("application/json", "text/json")
    if is_json or (not value.startswith(b"\x89PNG") and looks_like_json(value)):
        return json_to_sources(parse_json(value, limits), limits)
    return [value], False


def request_header(context, idx: int, name: str) -> str | None:
    """Request `idx`'s header `name`, in any letter case, from TorchServe's context; None if absent."""
    try:
        headers = context.get_all_request_header(idx) or {}
    except (AttributeError, IndexError, TypeError):
        return None
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)
