"""POST /explanations/ without a server: the handler's explanations on the real archives' models
(handlers/saliency.py). Same decoding and errors as predictions, the prediction's contract plus a
saliency map, and the saliency of held-out pictures lies on their strokes and matters to the
model (removing the pixels it ranks highest costs the answer far more than removing others)."""
import base64
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from handlers.contract import check_explanation, check_prediction
from handlers.png import png_bytes
from handlers.saliency import gradient_x_input
from model_defs.registry import MODELS, get_spec
from settings.limits import LIMITS
from tests.support.paths import artifact

PNG = {"Content-Type": "image/png"}
EXPLAIN = {**PNG, "explain": "True"}  # the header TorchServe's /explanations/ API sets
JSON_EXPLAIN = {"Content-Type": "application/json", "explain": "True"}
DIGITS = [name for name in MODELS if get_spec(name).preprocessing == "digit"]


def decode_png(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


@pytest.fixture(scope="module")
def scripted_for_grad():
    """Our own copies of the exported models: the session `scripted` fixture may first be called
    inside torch.inference_mode() (tests/unit/test_handler.py), which loads their buffers as inference
    tensors that autograd refuses to save. The handler loads its model outside inference mode."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = torch.jit.load(str(artifact(name, "model.pt"))).eval()
        return cache[name]
    return get


def share_on_ink(canonical: np.ndarray, saliency: np.ndarray, threshold: int = 0) -> float:
    """Share of the positive saliency mass on pixels brighter than `threshold` (1.0 if none)."""
    positive = np.clip(saliency, 0, None)
    total = positive.sum()
    return float(positive[canonical > threshold].sum() / total) if total > 0 else 1.0


def spread(data, count: int = 20) -> np.ndarray:
    """`count` held-out images spread over the split (it is sorted by class)."""
    return np.linspace(0, len(data) - 1, count).astype(int)


@pytest.mark.parametrize("name", list(MODELS))
def test_explanation_is_the_prediction_plus_saliency_and_pictures(name, loaded, held_out):
    data = held_out(name)
    h = loaded(name)
    body = png_bytes(data.raw[0])
    (ps, predicted), (es, explained) = h.batch([({"body": body}, PNG), ({"body": body}, EXPLAIN)])
    assert ps == es == 200
    height, width = get_spec(name).input_size
    check_prediction(predicted, get_spec(name).labels, model=name)
    # the prediction's fields + saliency (H x W, finite), saliency_png, canonical_png
    check_explanation(explained, get_spec(name).labels, (height, width), model=name)
    assert {k: explained[k] for k in predicted} == predicted
    saliency = np.array(explained["saliency"])
    assert saliency.max() > 0
    canonical = decode_png(explained["canonical_png"])
    assert canonical.size == (width, height) and canonical.mode == "L"
    assert np.array_equal(np.asarray(canonical), data.canonical[0])
    heat = decode_png(explained["saliency_png"])
    assert heat.size == (width, height) and heat.mode == "RGB"
    assert len(explained["saliency_png"]) < 4000  # small: a few hundred bytes of PNG


@pytest.mark.parametrize("name", list(MODELS))
def test_saliency_is_the_models_gradient_x_input(name, loaded, held_out, scripted_for_grad):
    data = held_out(name)
    status, body = loaded(name).one({"body": png_bytes(data.raw[5])}, EXPLAIN)
    assert status == 200
    expected = gradient_x_input(scripted_for_grad(name), data.canonical[5:6], np.array([body["index"]]))[0]
    assert np.allclose(np.array(body["saliency"]), expected, rtol=1e-3, atol=1e-6 * np.abs(expected).max())


@pytest.mark.parametrize("name", DIGITS)
def test_saliency_of_held_out_digits_lies_on_their_strokes(name, loaded, held_out):
    """20 held-out digits: every bit of positive saliency lies on ink (black pixels get none: the
    attribution is gradient x pixel), and most of it on the strokes' core (> 127), which is only
    ~70% of the ink pixels."""
    data = held_out(name)
    idx = spread(data)
    instances = [base64.b64encode(png_bytes(data.raw[i])).decode() for i in idx]
    status, answers = loaded(name).one({"body": json.dumps({"instances": instances[:16]}).encode()}, JSON_EXPLAIN)
    assert status == 200
    more = loaded(name).one({"body": json.dumps({"instances": instances[16:]}).encode()}, JSON_EXPLAIN)[1]
    answers += more
    on_ink = [share_on_ink(data.canonical[i], np.array(a["saliency"])) for i, a in zip(idx, answers)]
    core = [share_on_ink(data.canonical[i], np.array(a["saliency"]), 127) for i, a in zip(idx, answers)]
    assert min(on_ink) >= 1 - 1e-9
    assert sum(c >= 0.75 for c in core) >= 19, core
    assert np.median(core) >= 0.85, core


@pytest.mark.parametrize("name", list(MODELS))
def test_top_saliency_pixels_matter_more_than_others(name, held_out, scripted_for_grad):
    """Deletion: zeroing the tenth of the ink pixels the saliency ranks highest costs the answer's
    probability far more than zeroing a random tenth."""
    model = scripted_for_grad(name)
    data = held_out(name)
    images = data.canonical[spread(data)]
    with torch.inference_mode():
        answers = model(torch.from_numpy(images).unsqueeze(1)).numpy().argmax(1)
    saliency = gradient_x_input(model, images, answers)
    rng = np.random.default_rng(0)
    drops = []
    for image, s, answer in zip(images, saliency, answers):
        ink = np.flatnonzero(image > 0)
        k = max(1, len(ink) // 10)
        chosen = [ink[np.argsort(-s.ravel()[ink])[:k]], rng.choice(ink, k, replace=False)]
        variants = np.stack([image.ravel()] + [np.where(np.isin(np.arange(image.size), c), 0, image.ravel())
                                               for c in chosen]).reshape(3, 1, *image.shape)
        with torch.inference_mode():
            p = model(torch.from_numpy(variants)).numpy()[:, answer]
        drops.append((p[0] - p[1], p[0] - p[2]))
    top, random = np.mean(drops, axis=0)
    assert top >= 0.1 and top >= 5 * max(random, 0.01), (top, random)


def test_bad_requests_get_the_same_4xx_as_predictions_and_the_batch_carries_on(loaded, held_out):
    raw = held_out("lenet5").raw
    bad = [
        ({"body": b"not an image at all"}, "image/png"),
        ({}, None),
        ({"body": png_bytes(raw[2])[:60]}, "image/png"),
        ({"body": b'{"image": "%%%"}'}, "application/json"),
        ({"body": b'{"pixels": [[1, 2], [3]]}'}, "application/json"),
    ]
    h = loaded("lenet5")
    for row, content_type in bad:
        headers = {"Content-Type": content_type} if content_type else {}
        answers = h.batch([(row, headers), (row, {**headers, "explain": "True"}),
                           ({"body": png_bytes(raw[0])}, EXPLAIN)])
        assert answers[0] == answers[1] and 400 <= answers[0][0] < 500, (row, answers[:2])
        assert answers[2][0] == 200 and "saliency" in answers[2][1]


def test_too_many_images_to_explain_is_a_413_but_predictions_take_them(loaded, held_out):
    raw = held_out("lenet5").raw
    n = LIMITS.max_images_per_explanation + 1
    assert n <= LIMITS.max_images_per_request
    document = json.dumps({"instances": [base64.b64encode(png_bytes(raw[i])).decode() for i in range(n)]}).encode()
    h = loaded("lenet5")
    (ps, predicted), (es, refused) = h.batch([({"body": document}, {"Content-Type": "application/json"}),
                                              ({"body": document}, JSON_EXPLAIN)])
    assert ps == 200 and len(predicted) == n
    assert es == 413 and refused["error"] == "too_many_images_to_explain"
    assert str(LIMITS.max_images_per_explanation) in refused["message"]


def test_a_mixed_batch_takes_one_forward_pass_for_predictions(loaded, held_out, monkeypatch):
    h = loaded("lenet5")
    raw = held_out("lenet5").raw
    calls = []
    real = h.handler.saliency

    def counting(images, targets):
        calls.append(images.shape)
        return real(images, targets)

    monkeypatch.setattr(h.handler, "saliency", counting)
    answers = h.batch([({"body": png_bytes(raw[0])}, PNG), ({"body": png_bytes(raw[1])}, EXPLAIN),
                       ({"body": png_bytes(raw[2])}, PNG), ({"body": png_bytes(raw[3])}, EXPLAIN)])
    assert [s for s, _ in answers] == [200] * 4
    assert ["saliency" in body for _, body in answers] == [False, True, False, True]
    assert calls == [(2, 32, 32)]


def test_a_failing_explanation_does_not_fail_the_predictions_beside_it(loaded, held_out, monkeypatch):
    h = loaded("lenet5")
    raw = held_out("lenet5").raw

    def broken(images, targets):
        raise RuntimeError("boom")

    monkeypatch.setattr(h.handler, "saliency", broken)
    answers = h.batch([({"body": png_bytes(raw[0])}, PNG), ({"body": png_bytes(raw[1])}, EXPLAIN)])
    assert answers[0][0] == 200 and answers[0][1]["index"] == held_out("lenet5").labels[0]
    assert answers[1] == (500, {"error": "internal_error",
                                "message": "The server failed to explain this request; see its log."})
