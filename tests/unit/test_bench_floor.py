"""The benchmark's floor and photo rows, in process: the floor's pinned virtualenv matches .venv where it
must, the rows exist for lenet5 only, the photos are real 640x480 JPEGs the handler's decoding reads,
and the floor targets are the right ratios in the right direction. tests/e2e/test_bench_floor.py starts
the floor itself; nothing here asserts on speed."""
from __future__ import annotations

import io

import pytest
from PIL import Image

from loadtest.bench.floor import floor_running
from loadtest.bench.report import floor_targets, render_markdown, targets
from loadtest.bench.workload import Photos, Workload, rows_for
from serving.server import LaunchError
from settings.ports import Ports
from tests.support.paths import REPO
from tests.support.pins import pins

SHARED = ("torch", "numpy", "pillow", "scipy")  # what the floor must run at .venv's versions


def test_floor_requirements_are_pinned_at_the_versions_of_the_main_venv():
    floor = pins(REPO / "loadtest" / "floor" / "requirements.txt", every_line=True)
    main = pins(REPO / "requirements.txt", every_line=False)
    for name in SHARED:
        assert floor[name] == main[name], f"the floor runs {name} {floor[name]}, .venv {main[name]}"
    assert {"fastapi", "uvicorn", "uvloop", "httptools"} <= set(floor)


def test_the_floor_and_photo_rows_follow_rows_1_to_6_for_lenet5_only():
    keys = [r.key for r in rows_for("lenet5", 64, 2)]
    assert keys == ["model", "noop", "handler", "batch1", "multi", "proxied", "floor", "photos", "floor_photos"]
    titles = {r.key: r.title for r in rows_for("lenet5", 64, 2)}
    assert titles["floor"].startswith("7. ") and "2 worker processes" in titles["floor"]
    assert titles["photos"].startswith("8. ") and "640x480 JPEG" in titles["photos"]
    assert {r.server for r in rows_for("lenet5", 64, 2) if r.key.startswith("floor")} == {"floor"}
    assert [r.key for r in rows_for("fashion_mlp", 64, 2)][-1] == "proxied"


def test_photos_are_seeded_640x480_jpegs_with_the_models_own_answers():
    work = Workload.load("lenet5", 8, 1)
    photos = Photos.render(work, 3)
    assert photos.jpegs == Photos.render(work, 3).jpegs          # the same pictures every run
    for jpeg in photos.jpegs:
        image = Image.open(io.BytesIO(jpeg))
        assert (image.format, image.size) == ("JPEG", (640, 480))
    assert len(photos.model_labels) == 3 and set(photos.model_labels) <= set("0123456789")
    wires = photos.requests("127.0.0.1", 1)
    assert all(b"Content-Type: image/jpeg" in w.wire for w in wires)
    assert photos.summary()["count"] == 3 and photos.summary()["mean_bytes"] > 5_000


def _cell(throughput: float, p50: float, frontend: float, worker: float) -> dict:
    return {"throughput": throughput, "throughput_rounds": [throughput], "req_per_s": throughput, "p50_ms": p50,
            "p95_ms": p50, "p99_ms": p50, "requests": 10, "errors": {}, "attempts": 10, "error_rate": 0.0,
            "client_cpu_us_per_req": 50.0, "frontend_cpu_us_per_req": frontend, "worker_cpu_us_per_req": worker,
            "proxy_cpu_us_per_req": 0.0}


def _row(key: str, cells: dict[str, dict]) -> dict:
    return {"key": key, "title": key, "unit": "images/s" if key in ("model", "multi") else "req/s", "cells": cells}


def _results() -> dict:
    same = {c: _cell(1000.0, 2.0, 100.0, 500.0) for c in ("1", "16", "64")}
    rows = [_row(k, same) for k in ("model", "noop", "batch1", "multi", "proxied")]
    rows.append(_row("handler", {"1": _cell(300.0, 3.0, 900.0, 1300.0), "16": _cell(1800.0, 9.0, 100.0, 500.0),
                                 "64": _cell(1500.0, 30.0, 90.0, 500.0)}))
    rows.append(_row("floor", {"1": _cell(700.0, 1.5, 0.0, 1100.0), "16": _cell(1000.0, 16.0, 0.0, 1000.0),
                               "64": _cell(1000.0, 64.0, 0.0, 1000.0)}))
    rows.append(_row("photos", {c: _cell(150.0, 7.0, 100.0, 6000.0) for c in ("1", "16", "64")}))
    rows.append(_row("floor_photos", {c: _cell(100.0, 9.0, 0.0, 9000.0) for c in ("1", "16", "64")}))
    return {"model": "lenet5", "concurrency": [1, 16, 64], "rows": rows, "settings": {
        "batch_size": 16, "max_batch_delay_ms": 1, "workers": 1, "torch_threads": 1, "job_queue_size": 256},
        "machine": {"cpus": 2}, "images": 64, "images_per_request": 8, "started": "s", "finished": "f",
        "load_average_before": [], "load_average_after": [], "rounds": 1, "duration_s": 1.0, "warmup_s": 0.5,
        "command": "make bench", "photos": {"count": 8, "seed": 15, "width": 640, "height": 480, "mean_bytes": 27000},
        "floor": {"workers": 2, "versions": {"fastapi": "0.142.2", "uvicorn": "0.54.0", "torch": "2.13.0+cpu",
                                             "python": "3.11.7"}}}


def test_floor_targets_are_ratios_in_the_right_direction():
    results = _results()
    found = {t["target"].split(" (")[0]: t for t in targets(results)}
    assert found["row 3 >= 1.5 x row 7's best round in req/s at C=16"]["value"] == pytest.approx(1.8)
    assert found["row 3 >= 1.5 x row 7's best round in req/s at C=16"]["met"]
    assert found["row 3 >= 1.5 x row 7's best round in req/s at C=64"]["value"] == pytest.approx(1.5)
    assert found["row 3 >= 1.5 x row 7's best round in req/s at C=64"]["met"]   # the bound itself is met
    p50 = found["row 3 p50 <= 1.2 x row 7's at C=1"]
    assert p50["value"] == pytest.approx(2.0) and not p50["met"]                  # at most: 2.0 > 1.2 misses
    cpu = found["row 3 server CPU per request <= 2 x row 7's at C=1"]
    assert cpu["value"] == pytest.approx((900 + 1300) / 1100) and cpu["met"]       # the client's CPU left out
    assert found["row 8 >= 1.5 x row 9's best round in req/s at C=16"]["value"] == pytest.approx(1.5)
    assert not any(t["target"].startswith("row 8 p50") for t in targets(results))
    # a run without the floor (--model fashion_mlp, older bench.json) has none of them
    assert floor_targets({r["key"]: r for r in results["rows"] if not r["key"].startswith("floor")},
                         ["1", "16", "64"]) == []


def test_the_floor_is_judged_by_its_best_round():
    """One uvicorn process holding most connections makes a slow round; the median would flatter us."""
    results = _results()
    floor = next(r for r in results["rows"] if r["key"] == "floor")
    floor["cells"]["16"] = {**floor["cells"]["16"], "throughput": 1000.0, "throughput_rounds": [1000.0, 950.0, 1800.0]}
    found = {t["target"].split(" (")[0]: t for t in targets(results)}
    beat = found["row 3 >= 1.5 x row 7's best round in req/s at C=16"]
    assert beat["value"] == pytest.approx(1800 / 1800) and not beat["met"]


def test_report_says_what_the_floor_and_the_photos_are():
    text = render_markdown(_results(), "plot.png", "")
    assert "**floor** (rows 7 and 9): `loadtest/floor/app.py`" in text and "2 worker processes" in text
    assert "FastAPI 0.142.2, uvicorn 0.54.0" in text
    assert "**photos** (rows 8-9): 8 640x480 JPEG phone photos" in text and "seed 15" in text
    assert "| row 3 p50 <= 1.2 x row 7's at C=1 (a lone client waits little longer) | 2.00 | **no** |" in text
    assert "| floor | 1 | 0 | 1,100 | 0 | 50 |" in text                           # the CPU table has the floor


def test_the_floor_says_what_to_do_without_its_virtualenv(tmp_path):
    with pytest.raises(LaunchError, match="make floor-venv"):
        with floor_running(Ports.free().inference, tmp_path, python=tmp_path / "no-venv" / "bin" / "python"):
            pass
