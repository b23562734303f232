"""Decode budget against the real server: the crafted worst cases of reliability/crafted.py
get 422 at once and lenet5's worker lives on. Without a server: tests/unit/test_decode_budget.py."""
from __future__ import annotations

import time

import pytest
import requests

from reliability import crafted, probe


@pytest.mark.e2e
def test_scan_bomb_through_the_server_gets_422_and_keeps_the_worker(server):
    """The repeated-scan JPEG against the real server: before the decode budget, Pillow spent 19 s of CPU on it and a
    bigger one outlived the 30 s responseTimeout, which killed lenet5's only worker."""
    url = f"{server.inference_url}/predictions/lenet5"
    assert probe.post(url, probe.digit_png()).status == 200
    before = probe.worker_pids(server, "lenet5")
    bombs = {"jpeg": crafted.jpeg_many_scans(4000, 20_000), "png": crafted.png_many_idat(),
             "tiff": crafted.tiff_many_tiles(), "bmp": crafted.bmp_rle8()}
    for kind, data in bombs.items():
        started = time.perf_counter()
        response = requests.post(url, data=data, headers={"Content-Type": f"image/{kind}"}, timeout=60)
        elapsed = time.perf_counter() - started
        print(f"{kind} bomb ({len(data) / 1e6:.2f} MB): {response.status_code} in {elapsed:.2f} s")
        assert response.status_code == 422, response.text[:300]
        body = response.json()
        assert body["error"] == "too_complex" and "Save it" in body["message"]
        assert elapsed < 3.0
    assert probe.post(url, probe.digit_png()).status == 200
    assert probe.worker_pids(server, "lenet5") == before
