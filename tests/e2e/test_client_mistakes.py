"""Client mistakes against a real server (the session `server`, behind the proxy): what a hostile round
found cheap to send and dear to answer. JSON values the handler did not take were 500s; an 8 MB body
of small JSON objects held a worker ~1 s before its 4xx; a malformed JSON body made TorchServe's worker
log a ~4.8 KB traceback; a 7 MB EXIF held a worker 7-13 s. Each is now a fast 4xx that writes one
bounded line to the log. Without a server: tests/unit/test_input_properties.py, test_exif_limit.py,
test_worker_logging.py.
"""
from __future__ import annotations

import time

import psutil
import pytest

from handlers.contract import check_error
from reliability import crafted, probe

PREDICT = "/predictions/lenet5"
JSON = {"Content-Type": "application/json"}
MARKER = b"QQ-body-marker-QQ"
BODY = 8 * 1024 * 1024 - 1024  # under the 8 MiB body limit
# What a refused request may add to TorchServe's logs (ts_log.log, model_log.log, access_log.log):
# the frontend's own lines for any request (~0.9 KB: access, backend timings) and the handler's one
# line, in model_log and ts_log (~0.4 KB each). Before: ~4.8 KB, a traceback for each malformed body.
LOG_BYTES_PER_REQUEST = 2_500


def log_sizes(server) -> dict[str, int]:
    """Sizes of the server's logs, the periodic metrics logs left out."""
    return {p.name: p.stat().st_size for p in server.log_dir.glob("*.log") if "metrics" not in p.name}


def new_log_text(server, before: dict[str, int]) -> str:
    text = []
    for path in sorted(server.log_dir.glob("*.log")):
        if path.name in before:
            with path.open("rb") as f:
                f.seek(before[path.name])
                text.append(f.read().decode("utf-8", "replace"))
    return "".join(text)


def workers_cpu_s(server) -> float:
    total = 0.0
    for pid in probe.worker_pids(server, "lenet5"):
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def wait_for_lines(server, before: dict[str, int], needle: str, count: int, timeout: float = 10.0) -> str:
    """The logs' new text once `needle` appears `count` times in it (the frontend writes the worker's
    lines as it reads them, after the answers went out)."""
    deadline = time.monotonic() + timeout
    while True:
        text = new_log_text(server, before)
        if text.count(needle) >= count or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


MALFORMED = {  # name: (body, the 400's code)
    "unterminated, 8 MB": (b'{"image": "' + MARKER + b'", "x": [' + b"1, " * ((BODY - 40) // 3), "malformed_json"),
    "not UTF-8, 8 MB": (b'{"image": "' + MARKER + b'\xff' * (BODY - 40) + b'"}', "malformed_json"),
    "nested past the parser's limit": (b"[" * 100_000, "malformed_json"),
    "8 MB of lists": (b"[" * BODY, "json_too_complex"),
    "a stray comma": (b'{"image": "' + MARKER + b'",}', "malformed_json"),
}


@pytest.mark.e2e
def test_a_malformed_json_body_writes_one_bounded_line_to_the_log(server):
    url = f"{server.inference_url}{PREDICT}"
    assert probe.post(url, probe.digit_png()).status == 200
    time.sleep(0.5)  # the good request's own lines
    before = log_sizes(server)
    for name, (body, code) in MALFORMED.items():
        answer = probe.post(url, body, JSON, timeout=60)
        assert answer.status == 400 and check_error(answer.json(), 400) == code, (name, answer.body[:200])
    text = wait_for_lines(server, before, ": 400 ", 2 * len(MALFORMED))
    grown = {name: size - before.get(name, 0) for name, size in log_sizes(server).items()}
    print(f"\nlogs grew {grown} for {len(MALFORMED)} malformed JSON bodies")
    assert "Traceback" not in text and "Failed json decoding" not in text, text[-2000:]
    assert MARKER.decode() not in text
    assert text.count(": 400 ") == 2 * len(MALFORMED), text[-3000:]  # model_log.log and ts_log.log
    assert max(len(line) for line in text.splitlines()) < 600
    assert sum(grown.values()) <= LOG_BYTES_PER_REQUEST * len(MALFORMED), grown


@pytest.mark.e2e
@pytest.mark.parametrize("body, status, code", [
    (b"null", 422, "bad_json_fields"),
    (b"1.5", 422, "bad_json_fields"),
    (b"-1", 422, "bad_json_fields"),
    (b"100000000000", 422, "bad_json_fields"),     # bytes(10**11): a MemoryError in TorchServe's parsed value
    (b'"\\ud800"', 400, "bad_base64"),
    (b'{"instances": [null, true]}', 422, "bad_json_fields"),
])
def test_json_values_we_do_not_take_are_4xx_not_500(server, body, status, code):
    answer = probe.post(f"{server.inference_url}{PREDICT}", body, JSON)
    assert answer.status == status and check_error(answer.json(), status) == code, answer.body[:300]


@pytest.mark.e2e
@pytest.mark.parametrize("name, body", [
    ("empty objects", b'{"instances": [' + b"{}, " * ((BODY - 20) // 4) + b"{}]}"),
    ("small objects", b"[" + b'{"a":1},' * ((BODY - 10) // 8) + b'{"a":1}]'),
])
def test_a_body_of_millions_of_small_objects_costs_the_worker_milliseconds(server, name, body):
    """Before: TorchServe's worker parsed it (json.loads), then the handler again, ~0.9 s of worker CPU
    before the 4xx; now the handler gets the bytes and counts them first."""
    url = f"{server.inference_url}{PREDICT}"
    assert probe.post(url, probe.digit_png()).status == 200
    cpu = workers_cpu_s(server)
    answer = probe.post(url, body, JSON, timeout=60)
    spent = workers_cpu_s(server) - cpu
    print(f"\n{name}: {len(body) / 1e6:.1f} MB -> {answer.status} in {answer.seconds:.2f} s, workers' CPU {spent:.3f} s")
    assert answer.status == 400 and check_error(answer.json(), 400) == "json_too_complex", answer.body[:300]
    assert spent < 0.2


@pytest.mark.e2e
def test_an_exif_bomb_is_refused_fast_and_the_worker_lives_on(server):
    url = f"{server.inference_url}{PREDICT}"
    workers = probe.worker_pids(server, "lenet5")
    for kind, data in (("png", crafted.png_exif(7_000_000)), ("webp", crafted.webp_exif(7_000_000))):
        cpu = workers_cpu_s(server)
        answer = probe.post(url, data, {"Content-Type": f"image/{kind}"}, timeout=60)
        spent = workers_cpu_s(server) - cpu
        print(f"\n{kind} with 7 MB of EXIF: {answer.status} in {answer.seconds:.2f} s, workers' CPU {spent:.3f} s")
        assert answer.status == 413 and check_error(answer.json(), 413) == "exif_too_large", answer.body[:300]
        assert spent < 0.2
    assert probe.post(url, probe.digit_png()).status == 200
    assert probe.worker_pids(server, "lenet5") == workers
