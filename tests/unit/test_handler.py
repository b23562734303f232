"""The handler, without a server: the archive's metadata drives it, one forward pass per batch,
per-request errors never fail the batch."""
import base64
import json
import math

import numpy as np
import pytest
import torch

from handlers import contract
from handlers.contract import ContractError, check_error, check_prediction
from handlers.png import png_bytes
from model_defs.registry import MODELS, get_spec
from tests.support.handler_context import LoadedHandler, unpack_archive
from tests.support.parity import assert_same_probabilities

PNG = {"Content-Type": "image/png"}


@pytest.mark.parametrize("name", list(MODELS))
def test_png_gets_the_contract_and_the_model_probabilities(name, loaded, held_out, scripted):
    data = held_out(name)
    status, body = loaded(name).one({"body": png_bytes(data.raw[0])}, PNG)
    assert status == 200
    spec = get_spec(name)
    label = check_prediction(body, spec.labels, model=name)  # fields, labels in order, sum 1 +- 1e-4
    probs = np.array(list(body["probabilities"].values()))
    assert body["index"] == int(probs.argmax()) and label == spec.labels[body["index"]]
    with torch.inference_mode():
        expected = scripted(name)(torch.from_numpy(data.canonical[:1]).unsqueeze(1))[0].numpy()
    assert np.abs(probs - expected).max() <= 1e-5


def test_the_answer_contract_names_what_an_answer_breaks():
    labels = tuple("0123456789")
    good = contract.prediction("lenet5", labels, [0.02] * 7 + [0.82] + [0.02] * 2)
    assert (good["label"], good["index"], list(good["probabilities"])) == ("7", 7, list(labels))
    assert check_prediction(good, labels, model="lenet5") == "7"
    reversed_labels = dict(reversed(list(good["probabilities"].items())))
    for part, broken in [("fields", {**good, "extra": 1}), ("model name", {**good, "model": "mnist_net"}),
                         ("labels", {**good, "probabilities": reversed_labels}),
                         ("probabilities", {**good, "probabilities": {**good["probabilities"], "7": 0.5}}),
                         ("index", {**good, "index": 3}), ("label", {**good, "label": "3", "index": 3})]:
        with pytest.raises(ContractError, match="handlers/contract.py") as caught:
            check_prediction(broken, labels, model="lenet5")
        assert caught.value.part == part
    assert check_error(contract.error("not_an_image", "Send a PNG."), 415) == "not_an_image"
    with pytest.raises(ContractError, match="HTTP 200 is not an error status"):
        check_error(contract.error("not_an_image", "Send a PNG."), 200)


def test_one_forward_pass_per_batch(loaded, held_out, monkeypatch):
    h = loaded("lenet5")
    calls = []
    real_model = h.handler.model

    def counting(batch):
        calls.append(tuple(batch.shape))
        return real_model(batch)

    monkeypatch.setattr(h.handler, "model", counting)
    monkeypatch.setattr(h.handler, "batch_model", counting)  # batches of BATCH_MODEL_FROM or more (CPU)
    raw = held_out("lenet5").raw
    answers = h.batch([({"body": png_bytes(raw[i])}, PNG) for i in range(5)])
    assert [s for s, _ in answers] == [200] * 5
    assert calls == [(5, 1, 32, 32)]


def test_bad_requests_get_their_own_4xx_and_good_ones_still_answer(loaded, held_out):
    raw = held_out("lenet5").raw
    labels = held_out("lenet5").labels
    batch = [
        ({"body": png_bytes(raw[0])}, PNG),
        ({"body": b"not an image at all"}, PNG),
        ({"body": png_bytes(raw[1])}, PNG),
        ({}, {}),                                             # POST without Content-Type
        ({"body": png_bytes(raw[2])[:60]}, PNG),              # truncated PNG
        ({"body": b'{"image": "%%%"}'}, {"Content-Type": "application/json"}),
        ({"body": png_bytes(raw[3])}, PNG),
    ]
    answers = loaded("lenet5").batch(batch)
    statuses = [s for s, _ in answers]
    assert statuses == [200, 415, 200, 400, 400, 400, 200]
    for i, (status, body) in enumerate(answers):
        if status == 200:
            continue
        check_error(body, status)  # exactly {"error", "message"}, a message there
    assert [answers[i][1]["error"] for i in (1, 3, 4, 5)] == ["not_an_image", "missing_content_type",
                                                              "corrupt_image", "bad_base64"]
    assert "Content-Type" in answers[3][1]["message"]
    good = [answers[i][1]["index"] for i in (0, 2, 6)]
    assert good == [int(labels[i]) for i in (0, 1, 3)]


def test_form_encoded_post_is_told_which_header_to_send(loaded, held_out):
    status, body = loaded("lenet5").one({"\x89PNG\r\n": b"..."}, {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400 and body["error"] == "missing_content_type"


def test_instances_return_a_list_in_order(loaded, held_out):
    data = held_out("mnist_net")
    images = [base64.b64encode(png_bytes(data.raw[i])).decode() for i in range(4)]
    body = json.dumps({"instances": images}).encode()
    status, answer = loaded("mnist_net").one({"body": body}, {"Content-Type": "application/json"})
    assert status == 200 and isinstance(answer, list) and len(answer) == 4
    assert [a["index"] for a in answer] == [int(label) for label in data.labels[:4]]


def test_archive_with_a_tampered_model_refuses_to_load(tmp_path):
    model_dir = unpack_archive("lenet5", tmp_path)
    (model_dir / "model.pt").write_bytes((model_dir / "model.pt").read_bytes() + b"\0")
    with pytest.raises(RuntimeError, match="sha256"):
        LoadedHandler(model_dir, "lenet5")


def test_limits_come_from_the_archive_config(loaded):
    from settings.limits import LIMITS
    assert loaded("lenet5").handler.limits == LIMITS


JSON = {"Content-Type": "application/json"}


def test_per_request_pixel_budget_is_checked_from_the_headers(loaded):
    """Each image within the per-image limit, together over the per-request one: 413 before any
    pixel is decoded (the PNGs below declare their size and carry almost no data)."""
    from settings.limits import LIMITS
    from tests.support.sample_images import png_header_only
    side = math.isqrt(LIMITS.max_image_pixels)
    count = LIMITS.max_pixels_per_request // (side * side) + 1
    image = base64.b64encode(png_header_only(side, side)).decode()
    body = json.dumps({"instances": [image] * count}).encode()
    status, answer = loaded("lenet5").one({"body": body}, JSON)
    assert (status, answer["error"]) == (413, "too_many_pixels")
    assert f"{LIMITS.max_pixels_per_request:,}" in answer["message"]


@pytest.mark.parametrize("document", [{"image": 123}, {"image": None}, {"b64": ["iVBORw0KGgo="]},
                                      {"instances": [{"image": {"data": "iVBORw0KGgo="}}]}])
def test_image_field_that_is_not_a_string_is_bad_image_field(loaded, document):
    status, answer = loaded("lenet5").one({"body": json.dumps(document).encode()}, JSON)
    assert (status, answer["error"]) == (422, "bad_image_field")
    assert "base64" in answer["message"]


def test_json_nested_deeper_than_8_is_json_too_deep(loaded, held_out):
    image = base64.b64encode(png_bytes(held_out("lenet5").raw[0])).decode()
    deep = {"instances": [image] * 4 + [[[[[[[[0]]]]]]]]}  # the 5th item: 10 levels in all
    status, answer = loaded("lenet5").one({"body": json.dumps(deep).encode()}, JSON)
    assert (status, answer["error"]) == (400, "json_too_deep")


def test_multipart_that_does_not_match_its_boundary_is_not_called_missing_content_type(loaded):
    """TorchServe hands over {} for such a body; a Content-Type was sent, so say what is wrong."""
    status, body = loaded("lenet5").one({}, {"Content-Type": "multipart/form-data; boundary=abc"})
    assert status == 400 and body["error"] == "bad_multipart"
    assert "boundary='abc'" in body["message"] and "no Content-Type" not in body["message"]


def test_batches_on_the_cpu_go_through_the_optimised_model_within_float32_noise(loaded, held_out, scripted):
    """Batches of BATCH_MODEL_FROM images or more use the frozen, optimize_for_inference copy of the
    model, smaller ones the plain model with oneDNN off: the same top-1 and probabilities as the
    exported model's up to float32 noise (tests/support/parity.py)."""
    from handlers.classifier_handler import BATCH_MODEL_FROM
    from model_defs.preprocessing import canonicalize

    handler = loaded("lenet5").handler
    assert handler.batch_model is not None and handler.batch_model is not handler.model
    assert not torch.backends.mkldnn.enabled  # use_device on the CPU: ATen's convolutions for small batches
    spec = get_spec("lenet5")
    canonical = np.stack([canonicalize(r, spec.preprocessing, spec.input_size) for r in held_out("lenet5").raw[:64]])
    with torch.inference_mode():
        exported = scripted("lenet5")(torch.from_numpy(canonical).unsqueeze(1)).numpy()
    for size in (1, 2, BATCH_MODEL_FROM - 1, BATCH_MODEL_FROM, 16):
        for start in range(0, len(canonical), size):
            assert_same_probabilities(handler.predict(canonical[start:start + size]), exported[start:start + size])


def test_torchserve_finds_exactly_one_class_in_the_handler_module():
    """TorchServe's worker refuses a handler module that defines more than one class (every worker
    dies at load with "Expected only one class"): helpers live in other modules."""
    from ts.utils.util import list_classes_from_module

    from handlers import classifier_handler
    assert list_classes_from_module(classifier_handler) == [classifier_handler.ImageClassifierHandler]


def _npy(array: np.ndarray) -> bytes:
    import io
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _mixed_batch(raw: np.ndarray) -> list:
    """PNG digits, a bad request, a .npy of four digits and a phone photo: small pictures that the
    batch frames together, and one it frames as it comes."""
    from export.photos import photo_rng, render_photo
    return [({"body": png_bytes(raw[i])}, PNG) for i in range(4)] + [
        ({"body": b"not an image"}, PNG),
        ({"body": _npy(raw[4:8])}, {"Content-Type": "application/x-npy"}),
        ({"body": render_photo(raw[8], photo_rng(15, 8))}, {"Content-Type": "image/jpeg"}),
        ({"body": png_bytes(raw[9])}, PNG)]


def _one_by_one(h, raw: np.ndarray) -> list:
    """The answers each image gets alone in its batch (framed picture by picture)."""
    alone = [h.one(row, headers) for row, headers in _mixed_batch(raw)]
    npy = [h.one({"body": png_bytes(raw[i])}, PNG)[1] for i in range(4, 8)]
    alone[5] = (200, npy)
    return alone


def _same(got, expected) -> None:
    assert [status for status, _ in got] == [status for status, _ in expected]
    for (status, body), (_, reference) in zip(got, expected):
        if status != 200:
            assert body["error"] == reference["error"]
            continue
        for answer, wanted in zip(body if isinstance(body, list) else [body],
                                  reference if isinstance(reference, list) else [reference]):
            assert answer["index"] == wanted["index"]
            assert np.allclose(list(answer["probabilities"].values()), list(wanted["probabilities"].values()),
                               atol=1e-5)


def test_a_batch_frames_its_small_pictures_together_as_each_alone(loaded, held_out, monkeypatch):
    from model_defs.canonical_batch import CanonicalStack
    h, raw = loaded("lenet5"), held_out("lenet5").raw
    stacked = []
    framed = CanonicalStack.images
    monkeypatch.setattr(CanonicalStack, "images", lambda self: stacked.append(dict(self.waiting)) or framed(self))
    got = h.batch(_mixed_batch(raw))
    assert stacked[0] == {(28, 28): [0, 1, 2, 3, 4, 5, 6, 7, 9]}  # the photo (slot 8) was framed as it came
    _same(got, _one_by_one(h, raw))


def test_if_framing_together_fails_each_request_is_framed_alone(loaded, held_out, monkeypatch, caplog):
    """A bug of ours in the stack costs its batch nothing; one that fails a picture costs its request a 500."""
    from model_defs.canonical_batch import CanonicalStack
    h, raw = loaded("lenet5"), held_out("lenet5").raw
    expected = _one_by_one(h, raw)

    def broken(self):
        raise RuntimeError("a bug in the stack")

    alone = CanonicalStack.canonical

    def failing_on_slot_2(self, slot):
        if slot == 2:
            raise RuntimeError("a bug on one picture")
        return alone(self, slot)

    monkeypatch.setattr(CanonicalStack, "images", broken)
    monkeypatch.setattr(CanonicalStack, "canonical", failing_on_slot_2)
    got = h.batch(_mixed_batch(raw))
    assert "framing 10 pictures together failed" in caplog.text
    assert got[2][0] == 500 and got[2][1]["error"] == "internal_error"
    _same(got[:2] + got[3:], expected[:2] + expected[3:])
