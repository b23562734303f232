"""End to end against one real TorchServe (tests/conftest.py `server`): every model answers, the
contract holds, PNGs of held-out images give the in-process probabilities, and accuracy over
HTTP equals the offline accuracy."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import torch

from handlers.contract import check_prediction
from handlers.png import png_bytes
from model_defs.registry import MODELS, get_spec

pytestmark = pytest.mark.e2e
NAMES = list(MODELS)


def post_all(url: str, bodies: list[bytes], workers: int = 8) -> list[requests.Response]:
    """Concurrent POSTs (so the server really batches), answers in request order."""
    with requests.Session() as session, ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda b: session.post(url, data=b, headers={"Content-Type": "image/png"},
                                                     timeout=30), bodies))


def offline_probabilities(scripted, name: str, canonical: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return scripted(name)(torch.from_numpy(canonical).unsqueeze(1)).numpy()


@pytest.mark.parametrize("name", NAMES)
def test_every_model_answers_with_the_contract(server, held_out, name):
    spec = get_spec(name)
    response = requests.post(f"{server.inference_url}/predictions/{name}",
                             data=png_bytes(held_out(name).raw[0]), headers={"Content-Type": "image/png"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    # fields, model name, every label in order, sum 1 +- 1e-4, index of the label, label most probable
    check_prediction(response.json(), spec.labels, model=name)


def test_models_are_listed_with_ready_batching_workers(server):
    """Each model has the workers serving/workers.py sizes from this machine's CPUs (the archives
    name none), all ready."""
    from serving.management import get_json
    from serving.workers import configured_workers
    for name in NAMES:
        description = get_json(f"{server.management_url}/models/{name}")[0]
        assert description["batchSize"] > 1
        assert description["minWorkers"] == configured_workers(), description
        assert [w["status"] for w in description["workers"]] == ["READY"] * configured_workers()


@pytest.mark.parametrize("name", NAMES)
def test_png_over_http_matches_in_process_probabilities(server, held_out, scripted, name):
    """No train/serve skew: held-out images as PNG -> server == model on the data-set tensor."""
    data = held_out(name)
    count = 64
    answers = post_all(f"{server.inference_url}/predictions/{name}", [png_bytes(img) for img in data.raw[:count]])
    assert all(a.status_code == 200 for a in answers)
    served = np.array([list(a.json()["probabilities"].values()) for a in answers])
    expected = offline_probabilities(scripted, name, data.canonical[:count])
    assert np.abs(served - expected).max() <= 1e-5


# 2,000 of each test set over HTTP; the offline floors (tests/unit/test_export.py) take all 10,000
@pytest.mark.parametrize("name, count", [("lenet5", 2000), ("mnist_net", 2000), ("fashion_mlp", 1000)])
def test_http_accuracy_equals_offline_accuracy(server, held_out, scripted, name, count):
    data = held_out(name)
    assert len(data) >= count >= 500
    answers = post_all(f"{server.inference_url}/predictions/{name}", [png_bytes(img) for img in data.raw[:count]])
    statuses = {a.status_code for a in answers}
    assert statuses == {200}, statuses
    served = np.array([a.json()["index"] for a in answers])
    offline = offline_probabilities(scripted, name, data.canonical[:count]).argmax(axis=1)
    labels = data.labels[:count]
    assert (served == labels).mean() == (offline == labels).mean()
    assert (served == offline).all()
    assert (served == labels).mean() >= get_spec(name).accuracy_floor


def test_prometheus_metrics_are_served(server):
    text = requests.get(f"{server.metrics_url}/metrics", timeout=10).text
    assert "ts_inference_requests_total" in text


def test_unknown_model_is_a_404(server):
    response = requests.post(f"{server.inference_url}/predictions/resnet", data=b"x",
                             headers={"Content-Type": "image/png"}, timeout=10)
    assert response.status_code == 404


def test_the_readme_command_on_the_sample_pictures(server, tmp_path):
    """`make serve` prints `curl -T samples/digit.png .../predictions/lenet5`: curl -T is a PUT of
    the raw file with no Content-Type, and the samples are held-out pictures of known labels."""
    from export.samples import write_samples

    written = write_samples(tmp_path)
    for filename, model in (("digit.png", "lenet5"), ("digit.png", "mnist_net"), ("shoe.png", "fashion_mlp")):
        response = requests.put(f"{server.inference_url}/predictions/{model}",
                                data=(tmp_path / filename).read_bytes(), timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["label"] == written[filename], (model, response.json())
