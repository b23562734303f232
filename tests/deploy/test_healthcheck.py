"""docker/healthcheck.py (the image's HEALTHCHECK and the pod's readiness and start-up probes) against a
fake management API on a port the OS says is free.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from serving.batcher import STATUS_FILE
from settings.model_serving import SERVING
from settings.ports import HOST, Ports
from tests.support.paths import REPO as ROOT


class FakeManagement(BaseHTTPRequestHandler):
    statuses: dict[str, list[str]] = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        name = self.path.rsplit("/", 1)[-1]
        if name not in self.statuses:
            self.send_response(404)
            self.end_headers()
            return
        body = json.dumps([{"modelName": name, "workers": [{"status": s} for s in self.statuses[name]]}]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def run_healthcheck(port: int, work_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MANAGEMENT_PORT": str(port), "WORK_DIR": str(work_dir)}
    return subprocess.run([sys.executable, str(ROOT / "docker" / "healthcheck.py")], capture_output=True,
                          text=True, env=env, timeout=30)


def batcher_says(work_dir: Path, line: str | None) -> None:
    """What the frontend's agent wrote in Java's temp dir ($WORK_DIR/tmp); None: nothing."""
    status = work_dir / "tmp" / STATUS_FILE
    status.parent.mkdir(parents=True, exist_ok=True)
    status.unlink(missing_ok=True)
    if line is not None:
        status.write_text(line + "\n")


@pytest.fixture
def management():
    port = Ports.free().management
    server = ThreadingHTTPServer((HOST, port), FakeManagement)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_is_ready_only_when_every_model_has_a_ready_worker(tmp_path):
    batcher_says(tmp_path, "installed TorchServe 0.12.0's Model.pollBatch rewritten")
    port = Ports.free().management
    server = ThreadingHTTPServer((HOST, port), FakeManagement)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        FakeManagement.statuses = {name: ["READY"] for name in SERVING}
        assert run_healthcheck(port, tmp_path).returncode == 0
        FakeManagement.statuses["mnist_net"] = ["UNLOADING"]  # a worker that crash-loops
        result = run_healthcheck(port, tmp_path)
        assert result.returncode == 1 and "mnist_net: no READY worker (UNLOADING)" in result.stderr
        del FakeManagement.statuses["fashion_mlp"]  # not registered
        result = run_healthcheck(port, tmp_path)
        assert result.returncode == 1 and "fashion_mlp: management API answered 404" in result.stderr
    finally:
        server.shutdown()
        server.server_close()
    result = run_healthcheck(port, tmp_path)  # nothing listens now
    assert result.returncode == 1 and "unreachable" in result.stderr


@pytest.mark.parametrize("line, says", [
    ("refused org/pytorch/serve/wlm/Model is not TorchServe 0.12.0's", "TorchServe's own (waits up to maxBatchDelay"),
    ("failed the rewrite of org/pytorch/serve/wlm/Model failed", "our agent failed"),
    ("pending the agent waits for the frontend to load org/pytorch/serve/wlm/Model", "not decided yet"),
    (None, "Java did not start with the agent"),
])
def test_healthcheck_is_not_ready_while_the_frontend_runs_torchserves_own_batcher(management, tmp_path, line, says):
    """Every model READY, but our agent refused this TorchServe (or did not run): the pod takes no traffic."""
    FakeManagement.statuses = {name: ["READY"] for name in SERVING}
    batcher_says(tmp_path, line)
    result = run_healthcheck(management, tmp_path)
    assert result.returncode == 1, result.stderr
    assert "not ready: batcher: " in result.stderr and says in result.stderr, result.stderr
