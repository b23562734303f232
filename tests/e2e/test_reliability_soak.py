"""The soak runner, for seconds (`make soak` runs it for minutes, not in CI): it starts its own
server (--port-base 0: on ports the OS says are free), sends its mix, reports memory per process
and stops cleanly."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from serving.server import Server
from serving.workers import configured_workers
from settings.model_serving import SERVING
from settings.ports import Ports
from tests.support.paths import MODEL_STORE
from tests.support.paths import REPO as ROOT

pytestmark = pytest.mark.e2e


def test_soak_smoke_runs_clean_and_reports_memory(tmp_path):
    out = tmp_path / "soak.json"
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "reliability.soak", "--duration", "6", "--warmup", "2", "--rate", "40",
               "--clients", "4", "--max-growth", "1.0", "--port-base", "0",
               "--run-dir", str(run_dir), "--model-store", str(MODEL_STORE), "--out", str(out)]
    result = subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    print("\n" + result.stdout)
    assert report["errors"] == 0 and report["problems"] == []
    assert report["requests"] >= 100 and report["good"] > 0 and report["expected_4xx"] > 0
    assert report["requests"] == report["good"] + report["expected_4xx"]
    # each model's workers as serving/workers.py sizes them here: "lenet5", "lenet5#1", ...
    workers = [f"{name}#{i}" if i else name for name in SERVING for i in range(configured_workers())]
    assert set(report["processes"]) == {"frontend", *workers}
    for process in report["processes"].values():
        assert process["rss_start"] > 10 * 2**20 and process["rss_end"] > 10 * 2**20
        assert process["pid_start"] == process["pid_end"]
    assert "frontend" in result.stdout and "growth" in result.stdout
    assert Server(run_dir.resolve(), Ports()).processes() == []
