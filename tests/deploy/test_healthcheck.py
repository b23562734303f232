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


def run_healthcheck(port: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "MANAGEMENT_PORT": str(port)}
    return subprocess.run([sys.executable, str(ROOT / "docker" / "healthcheck.py")], capture_output=True,
                          text=True, env=env, timeout=30)


def test_healthcheck_is_ready_only_when_every_model_has_a_ready_worker():
    port = Ports.free().management
    server = ThreadingHTTPServer((HOST, port), FakeManagement)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        FakeManagement.statuses = {name: ["READY"] for name in SERVING}
        assert run_healthcheck(port).returncode == 0
        FakeManagement.statuses["mnist_net"] = ["UNLOADING"]  # a worker that crash-loops
        result = run_healthcheck(port)
        assert result.returncode == 1 and "mnist_net: no READY worker (UNLOADING)" in result.stderr
        del FakeManagement.statuses["fashion_mlp"]  # not registered
        result = run_healthcheck(port)
        assert result.returncode == 1 and "fashion_mlp: management API answered 404" in result.stderr
    finally:
        server.shutdown()
        server.server_close()
    result = run_healthcheck(port)  # nothing listens now
    assert result.returncode == 1 and "unreachable" in result.stderr
