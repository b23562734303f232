"""The floor of `make bench` (rows 7 and 9), for real: FastAPI + uvicorn from build/floor-venv (make
floor-venv; make test builds it) on a port the OS says is free, answering a held-out PNG and a phone
photo exactly as the model does (the benchmark's own answer check), a bad body with our JSON 4xx,
its CPU metered over its workers, and nothing of it left once stopped. No speed is asserted."""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import psutil
import pytest

from loadtest import client
from loadtest.bench.floor import floor_running
from loadtest.bench.measure import ProcessTreeCPU
from loadtest.bench.workload import Photos, Workload, checker
from settings.ports import Ports


def _post(url: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    request = urllib.request.Request(f"{url}/predictions/lenet5", data=body, method="POST",
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.mark.e2e
def test_the_floor_answers_as_the_model_does_and_stops_cleanly(tmp_path):
    work = Workload.load("lenet5", 16, 1)
    photos = Photos.render(work, 2)
    check = checker("lenet5", "full")
    with floor_running(Ports.free().inference, tmp_path, workers=2) as floor:
        tree = floor.processes()
        assert len([p for p in tree if p.pid != floor.pid]) >= 2, "uvicorn started fewer than 2 workers"
        meter = ProcessTreeCPU(floor.pid)
        before = meter.sample()
        for png, label in zip(work.pngs, work.model_labels):
            assert check(*_post(floor.inference_url, png, "image/png"), label) is None
        for jpeg, label in zip(photos.jpegs, photos.model_labels):
            assert check(*_post(floor.inference_url, jpeg, "image/jpeg"), label) is None
        status, body = _post(floor.inference_url, b"not an image", "image/png")
        assert status == 415 and json.loads(body)["error"] == "not_an_image"
        # the benchmark's own client, with keep-alive connections, checks every answer
        host, port = client.split_url(floor.inference_url)
        result = client.run(floor.inference_url, work.single_requests(host, port), check, 2, 5.0, max_requests=64)
        assert result.errors == {} and result.requests == 64
        assert meter.sample()["worker"] > before["worker"], "the workers' CPU was not metered"
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], "floor processes left"
    assert "Application startup complete." in (tmp_path / "uvicorn.log").read_text()

