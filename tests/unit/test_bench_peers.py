"""make bench-peers, in process: each peer's virtualenv is pinned at .venv's versions where it must
be, its requests carry the very PNGs the other rows send, and the report's ratios are ours over theirs.
tests/e2e/test_bench_peers.py runs the peers for real; nothing here asserts on speed."""
from __future__ import annotations

import base64
import json
import struct

import pytest

from loadtest.bench.peers import PEERS, render, triton_checker
from loadtest.bench.report import KEEP_MARKER
from loadtest.bench.workload import Workload
from tests.support.paths import REPO
from tests.support.pins import pins

SHARED = ("torch", "numpy", "pillow", "scipy")  # what every peer must run at .venv's versions
OWN_NUMPY = {"pytriton": "1.26.4"}  # nvidia-pytriton 0.7.0 requires numpy<2 (pytriton-requirements.txt)


@pytest.mark.parametrize("name", list(PEERS))
def test_peer_requirements_are_pinned_at_the_versions_of_the_main_venv(name):
    peer = pins(PEERS[name].requirements, every_line=True)
    main = pins(REPO / "requirements.txt", every_line=False)
    for package in SHARED:
        want = OWN_NUMPY[name] if package == "numpy" and name in OWN_NUMPY else main[package]
        assert peer[package] == want, f"{name} runs {package} {peer[package]}, expected {want}"
    assert PEERS[name].package in peer


def test_peer_requests_carry_the_same_pngs_as_json_base64():
    work = Workload.load("lenet5", 4, 1)
    requests = PEERS["litserve"].requests(work, "127.0.0.1", 8000)
    assert [r.expected for r in requests] == work.model_labels
    for request, png in zip(requests, work.pngs):
        head, body = request.wire.split(b"\r\n\r\n", 1)
        assert head.startswith(b"POST /predictions/lenet5 HTTP/1.1") and b"Content-Type: application/json" in head
        assert f"Content-Length: {len(body)}".encode() in head
        assert base64.b64decode(json.loads(body)["image"]) == png


def test_triton_requests_carry_the_pngs_as_a_bytes_tensor_in_the_binary_extension():
    work = Workload.load("lenet5", 3, 1)
    for request, png, label in zip(PEERS["pytriton"].requests(work, "127.0.0.1", 8000), work.pngs, work.model_labels):
        head, body = request.wire.split(b"\r\n\r\n", 1)
        assert head.startswith(b"POST /v2/models/lenet5/infer HTTP/1.1") and request.expected == label
        assert f"Content-Length: {len(body)}".encode() in head
        size = int(head.split(b"Inference-Header-Content-Length: ")[1].split(b"\r\n")[0])
        header = json.loads(body[:size])
        assert header["inputs"] == [{"name": "image", "shape": [1, 1], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(png) + 4}}]
        assert struct.unpack("<I", body[size:size + 4]) == (len(png),) and body[size + 4:] == png


def test_the_triton_check_reads_the_probabilities_tensor():
    check = triton_checker("lenet5")
    seven = [0.0] * 10
    seven[7] = 1.0
    answer = json.dumps({"outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [1, 10], "data": seven}]})
    assert check(200, answer.encode(), "7") is None
    assert check(200, answer.encode(), "1") == "wrong label"
    assert check(400, b'{"error": "x"}', "7") == "status 400"
    assert check(200, b"{}", "7") == "triton: not an inference answer"
    assert check(200, answer.replace("1.0", "0.5").encode(), "7") == "triton: shape or sum"


def _cell(rps: float, p50: float) -> dict:
    return {"throughput": rps, "throughput_rounds": [rps], "p50_ms": p50, "p99_ms": 2 * p50, "errors": {},
            "frontend_cpu_us_per_req": 100.0, "worker_cpu_us_per_req": 300.0}


def test_the_report_puts_ours_over_theirs_and_keeps_the_notes():
    results = {"model": "lenet5", "images": 4, "versions": {"litserve": "0.2.19"}, "workers": 2,
               "machine": {"cpus": 2}, "load_average_before": [], "load_average_after": [], "rounds": 1,
               "duration_s": 1.0, "warmup_s": 0.5, "server_warmup_s": 1.0, "started": "s", "finished": "f",
               "command": "make bench-peers",
               "rows": [{"key": "ours", "title": "ours: TorchServe", "cells": {"16": _cell(3000, 4.0)}},
                        {"key": "floor", "title": "the floor: FastAPI", "cells": {"16": _cell(1000, 12.0)}},
                        {"key": "litserve", "title": "LitServe, batching", "cells": {"16": _cell(1500, 8.0)}}]}
    text = render(results, "## Notes by hand\n")
    assert "| the floor | 16 | 3.00 | 0.33 |" in text
    assert "| LitServe | 16 | 2.00 | 0.50 |" in text
    assert "| LitServe, batching | 16 | 1,500 | 1,500 | 8.00 | 16.00 | 0 | 400 |" in text
    assert text.split(KEEP_MARKER)[1] == "\n## Notes by hand\n" and "litserve 0.2.19" in text
