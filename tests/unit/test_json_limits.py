"""JSON bodies bounded before and while they are parsed: nesting depth, and the structure counted
on the raw bytes (objects, members, lists) against what the largest legal request holds."""
from __future__ import annotations

import base64
import io
import json
import time

import numpy as np
import pytest
from PIL import Image

from handlers.errors import InputError
from handlers.request_decoding import JSON_SPARE_LISTS, check_json_counts, request_to_sources
from settings.limits import LIMITS
from tests.unit.test_input_properties import decode_all_the_way


# ---- JSON nesting depth ------------------------------------------------------------------------
def nested(depth: int, leaf="0") -> str:
    return "[" * depth + leaf + "]" * depth


def test_deep_json_is_refused_without_recursion_error():
    """Past the parser's recursion limit the JSON cannot even be read: malformed_json."""
    with pytest.raises(InputError) as err:
        decode_all_the_way(b"[" * 100_000 + b"]" * 100_000, "application/json")
    assert (err.value.status, err.value.code) == (400, "malformed_json")


@pytest.mark.parametrize("document", [
    nested(9),                                                          # 9 levels of lists
    '{"pixels": %s}' % nested(8),                                       # object + 8 lists
    '{"instances": ["a", "b", "c", "d", %s]}' % nested(7),              # the 5th item is deep
    '{"instances": ["a", "b", "c", "d", "e", "f", {"pixels": %s}]}' % nested(6),
    '{"pixels": [%s, %s]}' % (nested(1), nested(8)),                    # a later row is deep
    '{"x": 1, "y": 2, "z": 3, "w": 4, "v": %s}' % nested(8),           # the 5th value is deep
])
def test_json_deeper_than_8_levels_is_json_too_deep(document):
    with pytest.raises(InputError) as err:
        decode_all_the_way(document.encode(), "application/json")
    assert (err.value.status, err.value.code) == (400, "json_too_deep"), err.value.message


def test_json_8_levels_deep_is_not_too_deep():
    with pytest.raises(InputError) as err:  # a valid depth; refused for its shape instead
        decode_all_the_way(nested(8).encode(), "application/json")
    assert err.value.code == "bad_json_fields"
    sources, _ = request_to_sources({"body": b'{"instances": [{"pixels": [[0, 1], [1, 0]]}]}'},
                                    "application/json", LIMITS)
    assert sources[0].shape == (2, 2)


# ---- JSON structure counted before parsing -------------------------------------------------------
BODY = LIMITS.max_request_bytes - 64


def fill(prefix: bytes, unit: bytes, suffix: bytes) -> bytes:
    """prefix + unit repeated + suffix, just under the body limit."""
    return prefix + unit * ((BODY - len(prefix) - len(suffix)) // len(unit)) + suffix


# json.loads spent 0.5-1.9 s of CPU on each of these (and TorchServe's worker parsed them once more
# before the handler saw them); counted, they are refused in < 0.01 s
SMALL_STRUCTURES = {
    "empty objects in instances": fill(b'{"instances": [', b"{}, ", b"{}]}"),
    "small objects in a list": fill(b"[", b'{"a":1},', b'{"a":1}]'),
    "one object, many members": b"{" + b",".join(b'"k%d":1' % i for i in range(600_000)) + b"}",
    "empty lists": fill(b"[", b"[],", b"[]]"),
    "one-pixel rows": fill(b'{"pixels": [', b"[0],", b"[0]]}"),
}


@pytest.mark.parametrize("name", list(SMALL_STRUCTURES))
def test_a_body_of_millions_of_small_structures_is_refused_before_parsing(name):
    body = SMALL_STRUCTURES[name]
    assert len(body) <= LIMITS.max_request_bytes
    started = time.process_time()
    with pytest.raises(InputError) as err:
        request_to_sources({"body": body}, "application/json", LIMITS)
    assert time.process_time() - started < 0.05
    assert (err.value.status, err.value.code) == (400, "json_too_complex"), err.value.message
    assert "instances" in err.value.message and ".npy" in err.value.message


def b64_png(side: int = 28) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(side).integers(0, 256, (side, side), dtype=np.uint8)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize("document", [
    {"instances": [{"pixels": [[(x * y) % 256 for x in range(28)] for y in range(28)]}] * 64},
    {"instances": [b64_png()] * 64},
    {"instances": [{"image": "data:image/png;base64," + b64_png(), "id": i, "meta": {"a": 1, "b": "c:d"}}
                   for i in range(64)]},
    {"instances": [{"b64": b64_png(), "range": "0-255"}] * 64},
    {"pixels": [[0.5] * 8192], "range": "0-1"},
])
def test_real_requests_pass_the_counts(document):
    sources, is_list = request_to_sources({"body": json.dumps(document).encode()}, "application/json", LIMITS)
    assert len(sources) == len(document.get("instances", [1])) and is_list == ("instances" in document)


def test_the_counts_admit_the_most_rows_a_request_may_hold():
    """64 images of max_image_side one-pixel rows: legal, so counted through (parsing it is the cost
    of a legal request); one list more than that can be, refused."""
    image = '{"pixels": [' + ",".join(["[0]"] * LIMITS.max_image_side) + "]}"
    body = ('{"instances": [' + ",".join([image] * LIMITS.max_images_per_request) + "]}").encode()
    check_json_counts(body, LIMITS)
    with pytest.raises(InputError) as err:
        check_json_counts(body.replace(b"[0]", b"[[0]]", JSON_SPARE_LISTS + 1), LIMITS)
    assert err.value.code == "json_too_complex"


def test_pixels_taller_than_an_image_may_be_are_refused_before_their_values_are_read():
    """Its size first (413), not its values (the "x" would be a 422 bad_pixels): no value of a picture
    taller than max_image_side is looked at."""
    body = b'{"pixels": [' + b",".join([b"[1]"] * (LIMITS.max_image_side + 1)) + b', ["x"]]}'
    with pytest.raises(InputError) as err:
        request_to_sources({"body": body}, "application/json", LIMITS)
    assert (err.value.status, err.value.code) == (413, "image_too_large"), err.value.message
