"""A NumPy .npy body -> the images it holds, its header checked against the limits before any data.

For clients that already hold pixel arrays (numpy.save(f, images) of a uint8 [N, H, W] batch): no
image encoding, no base64, no JSON. Recognised by its magic b"\\x93NUMPY", whatever the Content-Type.

Accepted (numpy.lib.format reads the header; its fields are checked before the data is touched):
- format version 1.0 or 2.0 (what numpy.save writes), C or Fortran order;
- shape [H, W] (one image, one answer) or [N, H, W] (a list of N answers, in order);
- dtype uint8 (0-255), or float32 / float64 holding 0-1 (a ToTensor()-style float image; scaled
  by 255 and rounded, like JSON "pixels" with "range": "0-1"), either byte order.
Everything else is a 4xx saying what to send: other dtypes (int, bool, float16, object arrays and so
pickles, structured records), other ranks ([N, 1, H, W]: drop the channel axis), zero images, more
images or pixels than InputLimits allows, and data shorter or longer than the header declares.
"""
from __future__ import annotations

import io

import numpy as np
from numpy.lib import format as npy_format

from handlers.errors import InputError
from handlers.image_decoding import check_image_count, check_request_pixels, check_size
from settings.limits import InputLimits

NPY_MAGIC = npy_format.MAGIC_PREFIX  # b"\x93NUMPY"
FLOAT_ITEMSIZES = (4, 8)             # float32, float64
HEADER_READERS = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
HOW_TO_WRITE = "numpy.save(f, images) of a uint8 [N, H, W] array (or float32 in 0-1)"


def is_npy(data) -> bool:
    return isinstance(data, (bytes, bytearray, memoryview)) and bytes(data[:6]) == NPY_MAGIC


def read_header(data: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran_order, dtype, offset of the data) from the .npy header; no data read."""
    stream = io.BytesIO(data)
    try:
        version = npy_format.read_magic(stream)
        reader = HEADER_READERS.get(version)
        if reader is None:
            raise InputError(400, "bad_npy", f"The .npy body is format version {version[0]}.{version[1]}; "
                             f"this server reads versions 1.0 and 2.0. Write it with {HOW_TO_WRITE}.")
        shape, fortran_order, dtype = reader(stream)  # ast.literal_eval of a header of <= 10,000 bytes
    except InputError:
        raise
    except Exception as err:  # noqa: BLE001 - numpy's words for a short, malformed or oversized header:
        # a ValueError mostly, but its parser (ast.literal_eval, then dtype from the client's "descr") also
        # raises IndexError ('descr': ()), RecursionError (a deeply nested literal), OverflowError...
        raise InputError(400, "bad_npy", f"The .npy header could not be read ({clip(str(err) or type(err).__name__)}). "
                         f"Write the body with {HOW_TO_WRITE}.") from None
    if not all(type(size) is int for size in shape):  # numpy lets booleans through (True is an int)
        raise InputError(400, "bad_npy", f"The .npy header's shape {clip(repr(shape))} holds something other "
                         f"than whole numbers. Write the body with {HOW_TO_WRITE}.")
    return shape, fortran_order, dtype, stream.tell()


def clip(text: str, limit: int = 200) -> str:
    """At most `limit` characters of a header's own text in a message (numpy quotes the whole header)."""
    return text if len(text) <= limit else text[:limit] + "..."


def check_dtype(dtype: np.dtype) -> None:
    accepted = dtype == np.uint8 or (dtype.kind == "f" and dtype.itemsize in FLOAT_ITEMSIZES)
    if dtype.hasobject or dtype.names is not None or dtype.subdtype is not None or not accepted:
        raise InputError(422, "bad_array_dtype", f"The .npy array's dtype is {clip(repr(dtype.str), 60)} "
                         f"({clip(str(dtype), 100)}); send "
                         "uint8 pixels in 0-255, or float32/float64 in 0-1: images.astype(numpy.uint8) "
                         "before numpy.save (object arrays and pickles are never loaded).")


def check_shape(shape: tuple[int, ...], limits: InputLimits) -> tuple[int, int, int]:
    """The header's shape against the limits -> (images, height, width)."""
    if len(shape) not in (2, 3):
        hint = " Drop the channel axis (images[:, 0])." if len(shape) == 4 and shape[1] == 1 else ""
        raise InputError(422, "bad_array_shape", f"The .npy array has shape {clip(str(list(shape)))}; send [N, H, W] "
                         f"(N grayscale images) or [H, W] (one image).{hint}")
    count, (height, width) = (shape[0] if len(shape) == 3 else 1), shape[-2:]
    if min(shape) < 0:
        raise InputError(422, "bad_array_shape", f"The .npy header declares shape {list(shape)}, with a "
                         f"negative size. Write the body with {HOW_TO_WRITE}.")
    if count == 0:
        raise InputError(422, "bad_array_shape", f"The .npy array has shape {list(shape)}: no images. "
                         "Send at least one.")
    check_image_count(count, limits)
    check_size((width, height), limits, what="Each image of the .npy array is")
    check_request_pixels(count * height * width, limits)
    return count, height, width


def unit_floats_to_uint8(values: np.ndarray) -> np.ndarray:
    """Floats in 0-1 -> uint8 0-255, rounded; anything else refused."""
    if not np.isfinite(values).all():
        raise InputError(422, "bad_pixels", "The .npy float array contains NaN or infinity; send finite "
                         "values in 0-1.")
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > 1:
        raise InputError(422, "bad_pixels", f"The .npy float array's values must lie in 0-1; found "
                         f"{low:g}..{high:g}. Send 0-255 pixels as uint8 (images.astype(numpy.uint8)).")
    return np.rint(values * 255.0).astype(np.uint8)


def npy_to_arrays(data: bytes, limits: InputLimits) -> tuple[list[np.ndarray], bool]:
    """A .npy body -> its images as uint8 [H, W] arrays, and whether it held a list ([N, H, W])."""
    shape, fortran_order, dtype, offset = read_header(data)
    check_dtype(dtype)
    count, height, width = check_shape(shape, limits)
    needed, present = count * height * width * dtype.itemsize, len(data) - offset
    if present != needed:
        what = "is truncated" if present < needed else "has bytes after the array"
        raise InputError(400, "bad_npy", f"The .npy body {what}: its header declares shape {list(shape)} "
                         f"of {dtype}, {needed:,} bytes of data, and {present:,} follow the header. "
                         f"Send the whole file {HOW_TO_WRITE} wrote, and nothing else.")
    array = np.frombuffer(data, dtype=dtype, count=count * height * width, offset=offset)
    array = array.reshape(shape, order="F" if fortran_order else "C")
    if dtype != np.uint8:
        array = unit_floats_to_uint8(array)
    if len(shape) == 2:
        return [array], False
    return list(array), True
