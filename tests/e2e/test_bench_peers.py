"""make bench-peers for real, briefly: ours, the floor, LitServe and PyTriton side by side through the
benchmark's round loop, every answer checked, and LitServe turning a bad image into our JSON 4xx. The
peers run from their own virtualenvs (build/peers-venv/<peer>), which only `make peers-venv` and `make
bench-peers` build: without them these tests skip. No speed is asserted."""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import psutil
import pytest

from loadtest.bench.peers import PEERS, main, peer_running
from settings.ports import Ports


def need_peers(*names: str) -> None:
    missing = [str(PEERS[name].python) for name in names if not PEERS[name].python.is_file()]
    if missing:
        pytest.skip(f"no peer virtualenv ({', '.join(missing)}): `make peers-venv` builds them")


@pytest.mark.e2e
def test_litserve_answers_a_bad_image_with_our_4xx(tmp_path):
    need_peers("litserve")
    with peer_running(PEERS["litserve"], Ports.free().inference, tmp_path, workers=1) as server:
        body = json.dumps({"image": base64.b64encode(b"not an image").decode()}).encode()
        request = urllib.request.Request(f"{server.inference_url}/predictions/lenet5", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=30)
        assert answer.value.code == 415 and json.loads(answer.value.read())["detail"]["error"] == "not_an_image"


@pytest.mark.e2e
def test_bench_peers_runs_ours_the_floor_and_the_peers_with_every_answer_right(tmp_path):
    need_peers(*PEERS)
    out, results = tmp_path / "BENCHMARKS-PEERS.md", tmp_path / "results"
    assert main(["--rounds", "1", "--duration", "1", "--warmup", "0.2", "--server-warmup", "0.5",
                 "--concurrency", "4", "--limit", "64", "--workers", "1", "--port-base", "0",
                 "--out", str(out), "--results", str(results), "--build", str(tmp_path / "build")]) == 0
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and " | 4 | " in line]
    titles = [row.split(" | ")[0][2:] for row in rows]
    assert [t.split(":")[0].split(",")[0] for t in titles[:4]] == ["ours", "the floor", "LitServe", "PyTriton (Triton)"]
    assert all(row.split(" | ")[6] == "0" for row in rows[:4]), "a row had errors (wrong or failed answers)"
    assert len(list(results.glob("*/peers.json"))) == 1
    left = [p.info["name"] for p in psutil.process_iter(["name", "cmdline"])
            if any(name in " ".join(p.info["cmdline"] or []) for name in ("loadtest.peers.", "tritonserver"))]
    assert not left, f"peer processes left running: {left}"
