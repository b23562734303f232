"""Property-based tests (Hypothesis) of the decoder and canonicaliser: whatever bytes or JSON a
stranger sends, the only exception is our InputError, and nothing hangs (a per-example deadline)."""
from __future__ import annotations

import io
import json
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from handlers.errors import InputError
from handlers.image_decoding import open_image
from handlers.request_decoding import request_to_sources
from model_defs.preprocessing import canonicalize
from settings.limits import LIMITS

PROPERTY = settings(max_examples=150, deadline=timedelta(seconds=2),
                    suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def decode_all_the_way(data: bytes, content_type: str = "image/png") -> None:
    """The handler's path for one request, minus the model."""
    sources, _ = request_to_sources({"body": data}, content_type, LIMITS)
    for source in sources:
        image = source if isinstance(source, np.ndarray) else open_image(source, LIMITS)
        out = canonicalize(image, "digit", (32, 32))
        assert out.shape == (32, 32) and out.dtype == np.uint8


def only_input_errors(data: bytes, content_type: str = "image/png") -> None:
    try:
        decode_all_the_way(data, content_type)
    except InputError as err:
        assert 400 <= err.status < 500 and err.code and len(err.message) > 10


def seed_images() -> list[bytes]:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (24, 18), dtype=np.uint8)
    out = []
    for fmt, mode, params in (("PNG", "L", {}), ("PNG", "RGBA", {}), ("JPEG", "RGB", {"quality": 90}),
                              ("JPEG", "RGB", {"progressive": True}), ("GIF", "L", {}), ("BMP", "RGB", {}),
                              ("WEBP", "RGB", {}), ("TIFF", "L", {"compression": "tiff_lzw"})):
        buf = io.BytesIO()
        Image.fromarray(pixels).convert(mode).save(buf, format=fmt, **params)
        out.append(buf.getvalue())
    return out


SEEDS = seed_images()


def test_seed_images_decode():
    for data in SEEDS:
        decode_all_the_way(data)


@PROPERTY
@given(st.binary(max_size=4096))
def test_random_bytes(data):
    only_input_errors(data)


@PROPERTY
@given(st.sampled_from(SEEDS), st.data())
def test_mutated_real_images(seed, data):
    """Flip, overwrite, insert and truncate bytes of real images in every format."""
    buf = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 8))):
        kind = data.draw(st.sampled_from(["flip", "set", "insert", "truncate"]))
        pos = data.draw(st.integers(0, max(0, len(buf) - 1)))
        if kind == "flip" and buf:
            buf[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set" and buf:
            buf[pos] = data.draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80]))
        elif kind == "insert":
            buf[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        else:
            del buf[pos:]
    only_input_errors(bytes(buf))


@PROPERTY
@given(st.sampled_from(SEEDS), st.integers(0, 64))
def test_headers_keep_their_magic_but_lie(seed, cut):
    """A valid signature followed by garbage: a corrupt image, never a crash."""
    only_input_errors(seed[:cut] + b"\xff" * 32)


# Numbers as JSON really carries them: any size (Python's json reads integers of any length, a
# float overflows to inf), so np.asarray and float() must never be trusted with them.
numbers = (st.integers() | st.integers(-10**400, 10**400) | st.floats(allow_nan=True, allow_infinity=True)
           | st.floats(-2, 300))

json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.text(max_size=20),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(
        st.sampled_from(["image", "pixels", "range", "instances", "b64", "x"]), children, max_size=4),
    max_leaves=40,
)


@PROPERTY
@given(json_values)
def test_arbitrary_json_documents(document):
    only_input_errors(json.dumps(document).encode(), "application/json")


rectangles = st.integers(1, 12).flatmap(
    lambda width: st.lists(st.lists(numbers, min_size=width, max_size=width), min_size=1, max_size=12))


@PROPERTY
@given(rectangles | st.lists(st.lists(numbers, min_size=1, max_size=12), min_size=1, max_size=12),
       st.sampled_from([None, "0-1", "0-255", "percent"]))
def test_pixel_arrays(rows, value_range):
    document = {"pixels": rows}
    if value_range:
        document["range"] = value_range
    only_input_errors(json.dumps(document).encode(), "application/json")


@PROPERTY
@given(st.integers(1, 64), st.integers(1, 64), st.sampled_from(["digit", "fashion"]), st.integers(0, 2**32 - 1))
def test_canonicalize_any_array(height, width, kind, seed):
    """Any grayscale picture canonicalises to the model size, and doing it twice changes nothing."""
    image = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    size = (32, 32) if kind == "digit" else (28, 28)
    once = canonicalize(image, kind, size)
    assert once.shape == size and once.dtype == np.uint8
    assert (canonicalize(once, kind, size) == once).all()


@st.composite
def number_literals(draw) -> str:
    """JSON number text of any length, past what json.dumps may write (Python refuses to turn an
    integer of more than 4,300 digits into text, and to parse one)."""
    digits = draw(st.integers(1, 6000))
    text = draw(st.sampled_from(["", "-"])) + draw(st.sampled_from("123456789")) + "0" * (digits - 1)
    if draw(st.booleans()):
        text += "." + "5" * draw(st.integers(1, 400))
    if draw(st.booleans()):
        text += f"e{draw(st.integers(-999, 999))}"
    return text


@PROPERTY
@given(number_literals(), st.sampled_from(['{"pixels": [[%s, 0]]}', '{"pixels": [[0], [%s]], "range": "0-1"}',
                                           '{"instances": [{"pixels": [[%s]]}]}', '{"image": %s}']),
       st.sampled_from(["application/json", "text/plain"]))
def test_numbers_of_any_size(literal, template, content_type):
    only_input_errors((template % literal).encode(), content_type)


@pytest.mark.parametrize("body, code", [
    (b'{"pixels": [[1' + b"0" * 400 + b", 0]]}", "bad_pixels"),          # past float: OverflowError
    (b'{"pixels": [[-1' + b"0" * 400 + b", 0]]}", "bad_pixels"),
    (b'{"pixels": [[1e400, 0]]}', "bad_pixels"),                          # float overflow: inf
    (b'{"pixels": [[1' + b"0" * 5000 + b", 0]]}", "malformed_json"),      # past int parsing's limit
])
def test_huge_numbers_are_client_errors(body, code):
    with pytest.raises(InputError) as err:
        decode_all_the_way(body, "application/json")
    assert err.value.code == code and 400 <= err.value.status < 500
    assert "sys.set_int_max_str_digits" not in err.value.message


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


# ---- colour modes ------------------------------------------------------------------------------
def tiff_in_mode(mode: str) -> bytes:
    gray = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 16), dtype=np.uint8))
    image = Image.merge("LAB", [gray] * 3) if mode == "LAB" else gray.convert(mode)
    buf = io.BytesIO()
    image.save(buf, format="TIFF")
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "I;16", "F"])
def test_tiff_in_every_convertible_mode_decodes(mode):
    decode_all_the_way(tiff_in_mode(mode), "image/tiff")


def test_tiff_in_cielab_is_415_unsupported_format():
    data = tiff_in_mode("LAB")
    assert Image.open(io.BytesIO(data)).mode == "LAB"  # valid; PIL reads it but cannot make it grey
    with pytest.raises(InputError) as err:
        decode_all_the_way(data, "image/tiff")
    assert (err.value.status, err.value.code) == (415, "unsupported_format")
    assert "LAB" in err.value.message and "RGB" in err.value.message
