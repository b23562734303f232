"""Load testing and benchmark tooling, in process: the client counts right answers and errors, the
report keeps its notes and computes the targets, the checkers judge answers (make loadtest's verdict
among them), the stage costs are timed.
Nothing here asserts on speed; tests/e2e/test_loadtest.py runs the real make targets.
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from loadtest import client
from loadtest.bench.report import KEEP_MARKER, kept_notes, render_markdown, targets
from loadtest.bench.workload import checker
from loadtest.verdict import WRONG_LABEL, images_in, verdict


# ---- the client, against a tiny local HTTP server ----------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        status = 503 if body == b"fail" else 200
        answer = json.dumps({"echo": body.decode()}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


@pytest.fixture()
def echo_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)  # a free port chosen by the OS
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _echo_check(status, body, expected):
    if status != 200:
        return f"HTTP {status}"
    return None if json.loads(body)["echo"] == expected else "wrong echo"


def test_client_counts_right_answers_errors_and_stops_at_its_bound(echo_server):
    host, port = client.split_url(echo_server)
    requests = [client.build_request(host, port, "/x", b"a", "text/plain", "a"),
                client.build_request(host, port, "/x", b"fail", "text/plain", "fail"),
                client.build_request(host, port, "/x", b"b", "text/plain", "not b", images=3)]
    result = client.run(echo_server, requests, _echo_check, concurrency=2, duration_s=10, max_requests=30)
    assert result.attempts == 30
    assert result.requests == 10                      # only the "a" requests are right
    assert result.errors == {"HTTP 503": 10, "wrong echo": 10}
    assert result.latencies_s.shape == (10,) and (result.latencies_s > 0).all()
    assert result.images.sum() == 10


def test_client_says_clearly_when_nothing_listens():
    with pytest.raises(ConnectionError, match="is the server running"):
        client.run("http://127.0.0.1:9", [client.build_request("127.0.0.1", 9, "/", b"", "x", None)],
                   _echo_check, concurrency=1, duration_s=0.1)


# ---- report arithmetic -------------------------------------------------------------------------
def _results(throughputs: dict[str, float], errors: int = 0, p99: float = 50.0) -> dict:
    rows = []
    for key, tp in throughputs.items():
        cell = {"throughput": tp, "throughput_rounds": [tp], "req_per_s": tp, "p50_ms": 1.0, "p95_ms": 2.0,
                "p99_ms": p99, "requests": 100, "errors": {"HTTP 503": errors} if errors else {},
                "attempts": 100 + errors, "error_rate": errors / (100 + errors),
                "client_cpu_us_per_req": 30.0, "frontend_cpu_us_per_req": 300.0, "worker_cpu_us_per_req": 100.0}
        rows.append({"key": key, "title": key, "unit": "req/s", "cells": {"16": dict(cell), "64": dict(cell)}})
    return {"model": "lenet5", "concurrency": [16, 64], "rows": rows, "settings": {
        "batch_size": 16, "max_batch_delay_ms": 5, "workers": 1, "torch_threads": 1, "job_queue_size": 256},
        "machine": {"cpus": 2}, "images": 540, "images_per_request": 64, "started": "s", "finished": "f",
        "load_average_before": [], "load_average_after": [], "rounds": 1, "duration_s": 1.0, "warmup_s": 0.5,
        "command": "make bench"}


def test_targets_are_ratios_of_the_right_rows():
    met = {t["target"].split(" (")[0]: t for t in targets(_results(
        {"model": 9000, "noop": 1000, "handler": 900, "batch1": 400, "multi": 3600}))}
    assert met["row 3 >= 0.85 x row 2 at C=64"]["value"] == pytest.approx(0.9)
    assert met["row 3 >= 2 x row 4 at C=64"]["value"] == pytest.approx(2.25)
    assert met["row 5 >= 4 x row 3 in images/s at C=16"]["value"] == pytest.approx(4.0)
    assert all(t["met"] for t in met.values())
    missed = targets(_results({"model": 1, "noop": 1000, "handler": 800, "batch1": 500, "multi": 10},
                              errors=1, p99=150.0))
    assert [t["met"] for t in missed] == [False, False, False, False, False]


def test_report_keeps_the_hand_written_notes(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("old table\n" + KEEP_MARKER + "\n## Tuning\nkept by hand\n")
    text = render_markdown(_results({"model": 1, "noop": 2, "handler": 3, "batch1": 1, "multi": 30}),
                           "plot.png", kept_notes(out))
    assert "old table" not in text and text.count(KEEP_MARKER) == 1
    assert text.rstrip().endswith("## Tuning\nkept by hand")
    assert "| handler | req/s | 64 | 3 |" in text and "![throughput and p99 latency per row](plot.png)" in text


def test_loadtest_verdict_fails_on_errors_and_on_more_wrong_answers_than_held_out_accuracy_allows():
    assert images_in("lenet5 png") == 1 and images_in("fashion_mlp json x8") == 8
    requests = {"lenet5 png": 900, "lenet5 json x8": 100, "fashion_mlp png": 1000}
    expected = {"lenet5": 0.01, "fashion_mlp": 0.10}
    passed, lines = verdict(requests, [("lenet5 png", WRONG_LABEL, 10), ("fashion_mlp png", WRONG_LABEL, 100)],
                            expected)
    assert passed and lines[0].startswith("load test passed: 2,000 requests, 0 transport or contract errors")
    assert any(line.split()[0] == "fashion_mlp" and "expects 10.00%" in line for line in lines)
    passed, lines = verdict(requests, [("lenet5 png", "HTTP 503", 2)], expected)
    assert not passed and "  2 x HTTP 503" in lines
    passed, lines = verdict(requests, [("fashion_mlp png", WRONG_LABEL, 300)], expected)
    assert not passed and any("worse than held-out accuracy allows" in line for line in lines)
    assert not verdict({}, [], expected)[0]  # nothing answered is no pass


def test_bench_checker_judges_contract_and_label():
    check = checker("lenet5", "full")
    good = {"model": "lenet5", "label": "7", "index": 7, "probabilities": {str(d): 0.1 for d in range(10)}}
    assert check(200, json.dumps(good).encode(), "7") is None
    assert check(200, json.dumps(good).encode(), "3") == "top-1 differs from the model"
    assert check(503, b"{}", "7") == "HTTP 503"
    assert check(200, b"<html>", "7") == "contract: not JSON"
    assert check(200, json.dumps({**good, "extra": 1}).encode(), "7") == "contract: fields"
    assert checker("lenet5", "list")(200, json.dumps([good, good]).encode(), ["7", "7"]) is None
    assert checker("lenet5", "list")(200, json.dumps([good]).encode(), ["7", "7"]) == "contract: list length"


def test_stage_costs_times_every_stage_of_the_handler(capsys):
    from loadtest import stage_costs

    assert stage_costs.main(["--images", "32", "--repeats", "1"]) == 0
    stages, whole = capsys.readouterr().out.split("The whole `handle`")
    rows = [line for line in stages.splitlines() if line.startswith("| ") and "us per image" not in line]
    assert [r.split(" | ")[0][2:] for r in rows] == [
        "read the header (PIL open)", "decode the pixels", "canonicalise, stacks of 16", "forward pass, batches of 16",
        "encode the JSON answer", "**sum**"]
    costs = [float(r.split(" | ")[1].strip(" |*")) for r in rows]
    assert all(c > 0 for c in costs) and costs[-1] == pytest.approx(sum(costs[:-1]), abs=0.2)
    assert "Canonicalising picture by picture" in stages
    # the whole handle by requests per batch, up to the serving batch size, against the stage sum
    rows = [line.strip("| ").split(" | ") for line in whole.splitlines() if line.startswith("| ") and "us per" not in line]
    assert [int(r[0]) for r in rows] == [1, 2, 4, 8, 16]
    assert all(float(us) > 0 and float(x) == pytest.approx(float(us) / costs[-1], abs=0.01) for _, us, x in rows)


def test_stage_costs_batch_sizes_end_at_the_serving_batch():
    from loadtest.stage_costs import batch_sizes

    assert batch_sizes(16) == [1, 2, 4, 8, 16]
    assert batch_sizes(12) == [1, 2, 4, 8, 12]
    assert batch_sizes(1) == [1]
