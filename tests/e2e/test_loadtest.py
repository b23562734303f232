"""`make loadtest` and `make bench-smoke`, for real: the load test against the session server, the
benchmark smoke with its own servers (four TorchServe variants and the floor) on ports the OS says are
free (BENCH_PORT_BASE=0). They run and write their outputs; nothing here asserts on speed.
"""
from __future__ import annotations

import csv
import json
import subprocess

import numpy as np
import pytest
from PIL import Image

from loadtest.verdict import WRONG_LABEL
from tests.support.paths import REPO as ROOT


def make(*args: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


# ---- the make targets, for real ----------------------------------------------------------------
@pytest.mark.e2e
def test_make_loadtest_runs_locust_and_writes_its_reports(server, tmp_path):
    out = tmp_path / "loadtest"
    result = make("loadtest", f"HOST={server.inference_url}", "USERS=4", "SPAWN_RATE=4", "DURATION=4s",
                  f"LOADTEST_OUT={out}", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ("locust_stats.csv", "locust_stats_history.csv", "locust_failures.csv", "report.html"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, f"{name} missing in {out}"
    with (out / "locust_stats.csv").open(newline="") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    assert int(rows["Aggregated"]["Request Count"]) > 0
    assert {name.split()[0] for name in rows if name != "Aggregated"} <= {"lenet5", "mnist_net", "fashion_mlp"}
    with (out / "locust_failures.csv").open(newline="") as f:
        assert all(WRONG_LABEL in row["Error"] for row in csv.DictReader(f)), "a transport or contract error"
    for words in ("Response time percentiles", "50%", "95%", "99%", "req/s"):  # Locust's tables, on stderr
        assert words in result.stderr, words
    assert "load test passed" in result.stdout and "0 transport or contract errors" in result.stdout


@pytest.mark.e2e
def test_make_loadtest_says_what_to_do_when_no_server_answers(tmp_path):
    result = make("loadtest", "HOST=http://127.0.0.1:9", "DURATION=1s", f"LOADTEST_OUT={tmp_path}", timeout=120)
    assert result.returncode != 0
    assert "no server answers at http://127.0.0.1:9/ping" in result.stderr and "make serve" in result.stderr


@pytest.mark.e2e
def test_make_bench_smoke_runs_every_row_and_writes_its_outputs(tmp_path):
    out = tmp_path / "bench"
    result = make("bench-smoke", f"BENCH_SMOKE_OUT={out}", "BENCH_PORT_BASE=0", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = (out / "BENCHMARKS.md").read_text()
    runs = sorted(out.glob("*/bench.json"))
    assert runs, f"no bench.json under {out}"
    results = json.loads(runs[-1].read_text())
    assert [r["key"] for r in results["rows"]] == ["model", "noop", "handler", "batch1", "multi", "proxied",
                                                   "floor", "photos", "floor_photos"]
    for row in results["rows"]:
        for c, cell in row["cells"].items():
            assert cell["requests"] > 0, f"{row['title']} at C={c} completed no request"
            assert cell["errors"] == {}, f"{row['title']} at C={c}: {cell['errors']}"
            assert np.isfinite([cell["p50_ms"], cell["p95_ms"], cell["p99_ms"]]).all()
            assert f"| {row['title']} | {row['unit']} | {c} |" in report
    proxied = next(r for r in results["rows"] if r["key"] == "proxied")
    assert all(cell["proxy_cpu_us_per_req"] > 0 for cell in proxied["cells"].values()), "nginx's CPU was not sampled"
    for key in ("floor", "floor_photos"):
        floor = next(r for r in results["rows"] if r["key"] == key)
        assert all(cell["worker_cpu_us_per_req"] > 0 for cell in floor["cells"].values()), "the floor's CPU was not sampled"
    assert results["photos"]["count"] == 8 and results["floor"]["workers"] >= 1
    assert "row 3 >= 1.5 x row 7's best round in req/s at C=16" in report and "**floor** (rows 7 and 9)" in report
    for heading in ("## Results", "## Targets", "## Where the CPU goes", "**machine**",
                    "**command**: `make bench-smoke`"):
        assert heading in report
    assert Image.open(out / "benchmarks.png").size[0] > 0
