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
from serving.settings import LIMITS

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


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(
        st.sampled_from(["image", "pixels", "range", "instances", "b64", "x"]), children, max_size=4),
    max_leaves=40,
)


@PROPERTY
@given(json_values)
def test_arbitrary_json_documents(document):
    only_input_errors(json.dumps(document).encode(), "application/json")


@PROPERTY
@given(st.lists(st.lists(st.floats(-2, 300) | st.sampled_from([float("nan"), float("inf"), -float("inf")]),
                         min_size=1, max_size=12),
                min_size=1, max_size=12), st.sampled_from([None, "0-1", "0-255", "percent"]))
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


def test_deep_json_is_refused_without_recursion_error():
    with pytest.raises(InputError) as err:
        decode_all_the_way(b"[" * 100_000 + b"]" * 100_000, "application/json")
    assert err.value.status == 400
