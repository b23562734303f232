"""What the reliability tests and the soak runner measure on a running server: worker PIDs,
resident memory (and its peak while something happens), readiness, timed requests.

Every request goes to the server's loopback address with a timeout; nothing here loops unbounded.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass

import numpy as np
import requests

from handlers.png import png_bytes
from serving import management
from serving.processes import rss
from serving.server import Server


def digit_png() -> bytes:
    """A small white-on-black stroke: a valid image every model answers."""
    image = np.zeros((28, 28), dtype=np.uint8)
    image[6:22, 13:16] = 255
    return png_bytes(image)


@dataclass
class Answer:
    """One request's outcome: an HTTP status, or the name of the client-side error (no status)."""
    status: int | None
    body: bytes
    error: str | None
    sent_at: float      # time.monotonic()
    seconds: float

    @property
    def done_at(self) -> float:
        return self.sent_at + self.seconds

    def json(self):
        return json.loads(self.body)


def post(url: str, body: bytes, headers: dict | None = None, timeout: float = 30.0,
         session: requests.Session | None = None) -> Answer:
    """POST and time it; a connection error or timeout is an Answer too (status None)."""
    sender = session or requests
    started = time.monotonic()
    try:
        response = sender.post(url, data=body, headers={"Content-Type": "image/png", **(headers or {})},
                               timeout=timeout)
        return Answer(response.status_code, response.content, None, started, time.monotonic() - started)
    except requests.RequestException as err:
        return Answer(None, b"", f"{type(err).__name__}: {err}"[:300], started, time.monotonic() - started)


def worker_pids(server: Server, model: str) -> list[int]:
    return sorted(int(w["pid"]) for w in server.management.workers(model) if w.get("pid"))


def wait_ready(server: Server, model: str, timeout: float = 30.0, not_pid: int | None = None) -> float:
    """Seconds until `model` has a READY worker (other than `not_pid`); raises TimeoutError."""
    try:
        return management.wait_ready(lambda: server.management, [model], timeout, interval=0.05,
                                     accept=lambda worker: bool(worker.get("pid")) and int(worker["pid"]) != not_pid)
    except TimeoutError:
        raise TimeoutError(f"{model} has no READY worker after {timeout:.0f} s; "
                           f"see {server.log_dir}/ts_log.log") from None


def server_memory(server: Server, models) -> dict[str, dict]:
    """Resident memory of the frontend and of each model's workers: {"frontend": {pid, rss}, ...}."""
    found = {"frontend": {"pid": server.pid(), "rss": rss(server.pid()) if server.pid() else 0}}
    for model in models:
        for i, pid in enumerate(worker_pids(server, model)):
            found[f"{model}" if i == 0 else f"{model}#{i}"] = {"pid": pid, "rss": rss(pid)}
    return found


class PeakRSS:
    """Samples the resident memory of some processes every `interval` s in a thread:
    `with PeakRSS([pid, ...]) as peak: ...` then `peak.growth[pid]` = peak - before, in bytes."""

    def __init__(self, pids: list[int], interval: float = 0.005):
        self.pids = list(pids)
        self.interval = interval
        self.before = {pid: rss(pid) for pid in self.pids}
        self.peak = dict(self.before)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for pid in self.pids:
                self.peak[pid] = max(self.peak[pid], rss(pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        for pid in self.pids:  # one last sample
            self.peak[pid] = max(self.peak[pid], rss(pid))

    @property
    def growth(self) -> dict[int, int]:
        return {pid: self.peak[pid] - self.before[pid] for pid in self.pids}
