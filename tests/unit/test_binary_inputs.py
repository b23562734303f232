"""Several images per request without base64: a NumPy .npy body ([N, H, W] -> a list of
answers, [H, W] -> one) and multipart forms with several image parts, through the real handler
without a server (tests/support/handler_context.py), hostile .npy headers included."""
from __future__ import annotations

import io
import time

import numpy as np
import pytest
from numpy.lib import format as npy_format
from ts.service import Service

from handlers.contract import check_error, check_prediction
from handlers.png import png_bytes
from model_defs.registry import get_spec
from settings.limits import LIMITS
from tests.support.parity import assert_same_probabilities

NPY = {"Content-Type": "application/x-npy"}
PNG = {"Content-Type": "image/png"}
FORM = {"Content-Type": "multipart/form-data; boundary=------------------------a1b2c3"}
MODEL = "lenet5"  # 32x32 input: the held-out 28x28 images must be framed by canonicalize on every path


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def npy_with_header(shape, descr: str = "|u1", fortran_order: bool = False, data: bytes = b"") -> bytes:
    """A .npy file whose header says anything, followed by `data` (a lie about the shape included)."""
    buffer = io.BytesIO()
    npy_format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": fortran_order, "shape": shape})
    return buffer.getvalue() + data


@pytest.fixture(scope="module")
def images(held_out) -> np.ndarray:
    return held_out(MODEL).raw[:8]


@pytest.fixture(scope="module")
def png_answers(loaded, images) -> list[dict]:
    """What the single-image path answers for each image: the reference for every other path."""
    answers = loaded(MODEL).batch([({"body": png_bytes(image)}, PNG) for image in images])
    assert [status for status, _ in answers] == [200] * len(images)
    return [body for _, body in answers]


def assert_same_answers(got: list[dict], expected: list[dict]) -> None:
    labels = get_spec(MODEL).labels
    assert len(got) == len(expected)
    for answer, reference in zip(got, expected):
        check_prediction(answer, labels, model=MODEL)
        assert answer["index"] == reference["index"]
        assert_same_probabilities(list(answer["probabilities"].values()), list(reference["probabilities"].values()))


# ---- .npy ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("row_key, headers", [("body", NPY), ("body", {"Content-Type": "application/octet-stream"}),
                                              ("body", {"Content-Type": "application/json"}),
                                              ("file", FORM), ("batch", FORM)])
def test_npy_batch_answers_a_list_in_order_like_the_png_path(loaded, images, png_answers, row_key, headers):
    status, body = loaded(MODEL).one({row_key: npy_bytes(images)}, headers)
    assert status == 200 and isinstance(body, list)
    assert_same_answers(body, png_answers)


def test_npy_of_one_image_answers_one_object(loaded, images, png_answers):
    status, body = loaded(MODEL).one({"body": npy_bytes(images[3])}, NPY)
    assert status == 200 and isinstance(body, dict)
    assert_same_answers([body], png_answers[3:4])


def test_npy_images_are_canonicalized_dark_on_light_ones_inverted(loaded, images):
    """Each array goes through canonicalize like a decoded PNG: ink on paper answers as the PNG of it."""
    paper = (255 - images).astype(np.uint8)
    from_png = loaded(MODEL).batch([({"body": png_bytes(image)}, PNG) for image in paper])
    status, body = loaded(MODEL).one({"body": npy_bytes(paper)}, NPY)
    assert status == 200
    assert_same_answers(body, [answer for _, answer in from_png])


@pytest.mark.parametrize("dtype", ["<f4", ">f4", "<f8"])
def test_float_arrays_in_0_to_1_answer_like_uint8(loaded, images, png_answers, dtype):
    status, body = loaded(MODEL).one({"body": npy_bytes((images / 255.0).astype(dtype))}, NPY)
    assert status == 200
    assert_same_answers(body, png_answers)


def test_fortran_order_answers_like_c_order(loaded, images, png_answers):
    fortran = np.asfortranarray(images)
    data = npy_bytes(fortran)
    assert npy_format.read_array_header_1_0(io.BytesIO(data[8:]))[1] is True  # the header says so
    status, body = loaded(MODEL).one({"body": data}, NPY)
    assert status == 200
    assert_same_answers(body, png_answers)


def test_npy_beside_other_requests_of_the_batch(loaded, images, png_answers):
    answers = loaded(MODEL).batch([({"body": npy_bytes(images[:3])}, NPY), ({"body": b"\x93NUMPY junk"}, NPY),
                                   ({"body": png_bytes(images[4])}, PNG)])
    assert [status for status, _ in answers] == [200, 400, 200]
    assert_same_answers(answers[0][1], png_answers[:3])
    assert_same_answers([answers[2][1]], png_answers[4:5])


class Unpickled(Exception):
    pass


def _record_unpickling():
    raise Unpickled("the server unpickled a client's object")


class Payload:
    def __reduce__(self):
        return _record_unpickling, ()


def hostile_cases() -> list:
    limit, side = LIMITS.max_images_per_request, LIMITS.max_image_side
    object_array = np.empty(2, dtype=object)
    object_array[:] = [Payload(), Payload()]
    pickled = io.BytesIO()
    np.save(pickled, object_array, allow_pickle=True)
    big_per_image = int((LIMITS.max_pixels_per_request // limit) ** 0.5) + 1
    return [
        # (name, body, status, error code, words the message must hold)
        ("huge N in the header, tiny body", npy_with_header((10**12, 28, 28), data=b"\0" * 64),
         413, "too_many_images", f"limit is {limit}"),
        ("huge side in the header, tiny body", npy_with_header((side + 1, 28), data=b"\0" * 64),
         413, "image_too_large", "Downscale"),
        ("2**62 pixels per image", npy_with_header((2**31, 2**31)), 413, "image_too_large", "Downscale"),
        ("too many pixels in all, tiny body", npy_with_header((limit, big_per_image, big_per_image)),
         413, "too_many_pixels", f"{LIMITS.max_pixels_per_request:,}"),
        ("N over the limit", npy_bytes(np.zeros((limit + 1, 28, 28), np.uint8)), 413, "too_many_images",
         "Split them"),
        ("zero images", npy_bytes(np.zeros((0, 28, 28), np.uint8)), 422, "bad_array_shape", "no images"),
        ("zero-width image", npy_bytes(np.zeros((2, 28, 0), np.uint8)), 400, "empty_image", "at least one pixel"),
        ("negative size", npy_with_header((-1, 28, 28)), 422, "bad_array_shape", "negative"),
        ("4-D NCHW", npy_bytes(np.zeros((2, 1, 28, 28), np.uint8)), 422, "bad_array_shape", "channel axis"),
        ("4-D RGB", npy_bytes(np.zeros((2, 28, 28, 3), np.uint8)), 422, "bad_array_shape", "[N, H, W]"),
        ("1-D", npy_bytes(np.zeros(784, np.uint8)), 422, "bad_array_shape", "[N, H, W]"),
        ("0-D", npy_bytes(np.array(7, np.uint8)), 422, "bad_array_shape", "[N, H, W]"),
        ("pickled objects", pickled.getvalue(), 422, "bad_array_dtype", "never loaded"),
        ("object dtype header, no data", npy_with_header((2, 28, 28), descr="|O"), 422, "bad_array_dtype", "uint8"),
        ("int64", npy_bytes(np.zeros((2, 28, 28), np.int64)), 422, "bad_array_dtype", "astype(numpy.uint8)"),
        ("float16", npy_bytes(np.zeros((2, 28, 28), np.float16)), 422, "bad_array_dtype", "float32"),
        ("bool", npy_bytes(np.zeros((2, 28, 28), bool)), 422, "bad_array_dtype", "uint8"),
        ("structured", npy_bytes(np.zeros((2, 28), dtype=[("a", "u1"), ("b", "u1")])), 422, "bad_array_dtype", "uint8"),
        ("sub-array dtype", npy_with_header((2, 28), descr=[("", "u1", (28,))]), 422, "bad_array_dtype", "uint8"),
        ("truncated data", npy_bytes(np.zeros((4, 28, 28), np.uint8))[:-1], 400, "bad_npy", "truncated"),
        ("header only", npy_with_header((4, 28, 28)), 400, "bad_npy", "truncated"),
        ("trailing bytes", npy_bytes(np.zeros((4, 28, 28), np.uint8)) + b"\n", 400, "bad_npy", "after the array"),
        ("magic only", b"\x93NUMPY", 400, "bad_npy", "numpy.save"),
        ("header not a dict", b"\x93NUMPY\x01\x00\x10\x00" + b"import os      \n", 400, "bad_npy", "numpy.save"),
        ("header longer than the body", b"\x93NUMPY\x01\x00\xff\xff{'descr': '|u1'", 400, "bad_npy", "numpy.save"),
        ("version 3.0", b"\x93NUMPY\x03\x00" + npy_bytes(np.zeros((1, 28, 28), np.uint8))[8:], 400, "bad_npy",
         "versions 1.0 and 2.0"),
        ("header over numpy's 10,000 bytes", b"\x93NUMPY\x02\x00" + (20_000).to_bytes(4, "little")
         + b"{" + b" " * 19_998 + b"\n", 400, "bad_npy", "numpy.save"),
        ("floats over 1", npy_bytes(np.full((2, 28, 28), 255.0, np.float32)), 422, "bad_pixels", "as uint8"),
        ("NaN", npy_bytes(np.full((2, 28, 28), np.nan, np.float32)), 422, "bad_pixels", "NaN"),
    ]


@pytest.mark.parametrize("case", hostile_cases(), ids=lambda case: case[0])
def test_hostile_npy_gets_its_own_4xx_quickly(loaded, case):
    name, data, status, code, words = case
    started = time.perf_counter()
    got_status, body = loaded(MODEL).one({"body": data}, NPY)
    elapsed = time.perf_counter() - started
    assert (got_status, body["error"]) == (status, code), body
    check_error(body, status)
    assert words in body["message"]
    assert elapsed < 0.5, f"{name}: {elapsed:.2f} s for a refusal"


# ---- multipart with several image parts -------------------------------------------------------

def test_several_image_parts_answer_a_list_in_part_order(loaded, images, png_answers):
    row = {f"image{i}": png_bytes(image) for i, image in enumerate(images)}
    status, body = loaded(MODEL).one(row, FORM)
    assert status == 200 and isinstance(body, list)
    assert_same_answers(body, png_answers)
    reordered = {name: row[name] for name in reversed(list(row))}
    status, body = loaded(MODEL).one(reordered, FORM)
    assert_same_answers(body, png_answers[::-1])


def test_text_fields_beside_image_parts_are_left_out(loaded, images, png_answers):
    status, body = loaded(MODEL).one({"note": b"hi", "a": png_bytes(images[0]), "label": b"BMW",
                                      "b": png_bytes(images[1])}, FORM)
    assert status == 200
    assert_same_answers(body, png_answers[:2])


@pytest.mark.parametrize("row", [{"note": b"hi", "file": "PNG"}, {"file": "PNG"}, {"note": b"hi", "upload": "PNG"}],
                         ids=["text then file", "one file", "text then an unusual field name"])
def test_one_image_part_still_answers_one_object(loaded, images, png_answers, row):
    row = {name: png_bytes(images[0]) if value == "PNG" else value for name, value in row.items()}
    status, body = loaded(MODEL).one(row, FORM)
    assert status == 200 and isinstance(body, dict)
    assert_same_answers([body], png_answers[:1])


def test_one_image_npy_part_among_png_parts_is_one_image(loaded, images, png_answers):
    row = {"a": png_bytes(images[0]), "b": npy_bytes(images[1]), "c": png_bytes(images[2])}
    status, body = loaded(MODEL).one(row, FORM)
    assert status == 200
    assert_same_answers(body, png_answers[:3])


def test_a_batch_npy_part_among_other_parts_is_refused(loaded, images):
    status, body = loaded(MODEL).one({"a": png_bytes(images[0]), "b": npy_bytes(images[1:3])}, FORM)
    assert (status, body["error"]) == (422, "bad_array_shape")
    assert "Part 2 of 2" in body["message"] and "only part" in body["message"]


def test_more_image_parts_than_the_limit_get_413(loaded, images):
    row = {f"f{i}": png_bytes(images[0]) for i in range(LIMITS.max_images_per_request + 1)}
    status, body = loaded(MODEL).one(row, FORM)
    assert (status, body["error"]) == (413, "too_many_images")


def test_a_bad_part_among_good_ones_gets_that_part_s_error(loaded, images):
    status, body = loaded(MODEL).one({"a": png_bytes(images[0]), "b": png_bytes(images[1])[:60]}, FORM)
    assert (status, body["error"]) == (400, "corrupt_image")
    status, body = loaded(MODEL).one({"a": png_bytes(images[0]), "b": b"\x00\x00\x00\x18ftypheic" + b"\0" * 64},
                                     FORM)
    assert (status, body["error"]) == (415, "unsupported_format") and "HEIC" in body["message"]


def test_explanations_take_several_parts_and_npy_up_to_their_own_limit(loaded, images):
    explain = {**NPY, "explain": "True"}
    status, body = loaded(MODEL).one({"body": npy_bytes(images[:2])}, explain)
    assert status == 200 and len(body) == 2 and all("saliency_png" in answer for answer in body)
    too_many = np.repeat(images[:1], LIMITS.max_images_per_explanation + 1, axis=0)
    status, body = loaded(MODEL).one({"body": npy_bytes(too_many)}, explain)
    assert (status, body["error"]) == (413, "too_many_images_to_explain")


def test_torchserve_keeps_only_the_last_part_of_a_repeated_field_name(images):
    """What the worker hands a handler (TorchServe 0.12.0, ts/service.py): one value per field name.
    `curl -F file=@a.png -F file=@b.png` therefore reaches the handler as {"file": b.png}: one image,
    one answer, and nothing in the row says a part was dropped. handlers/README.md tells clients to
    give each part its own name; tests/e2e/test_binary_inputs.py sees the same through the server."""
    first, second = png_bytes(images[0]), png_bytes(images[1])
    parameters = [{"name": "file", "contentType": "image/png", "value": first},
                  {"name": "file", "contentType": "image/png", "value": second},
                  {"name": "other", "contentType": "image/png", "value": first}]
    _, rows, _ = Service.retrieve_data_for_inference([{"requestId": b"r1", "parameters": parameters,
                                                       "headers": []}])
    assert rows == [{"file": second, "other": first}]
