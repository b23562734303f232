"""The Java frontend starts no thread per batch (serving/config.py jvm_options).

TorchServe 0.12's WorkerThread writes each batch to its worker with CompletableFuture.runAsync(); with
the common ForkJoinPool's parallelism at 1 (the JDK's default on 2 CPUs) the JDK starts a new thread
for every call. Java Flight Recorder (the JDK's jcmd and jfr) counts the threads the frontend starts
while one client sends requests one at a time, each its own batch: without the setting, one or more
per request."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from handlers.png import png_bytes

pytestmark = pytest.mark.e2e
REQUESTS = 40


def jdk_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"the JDK's {name} is not on the PATH")
    return path


def thread_starts(server, png: bytes, recording: Path, count: int = REQUESTS) -> int:
    """Threads the frontend started while `count` requests went one after the other (jdk.ThreadStart)."""
    jcmd, jfr, pid, name = jdk_tool("jcmd"), jdk_tool("jfr"), str(server.pid()), "per-batch-threads"
    subprocess.run([jcmd, pid, "JFR.start", f"name={name}", "settings=default"], check=True,
                   capture_output=True, timeout=60)
    try:
        with requests.Session() as session:
            for _ in range(count):
                answer = session.post(f"{server.inference_url}/predictions/lenet5", data=png,
                                      headers={"Content-Type": "image/png"}, timeout=30)
                assert answer.status_code == 200, answer.text
    finally:
        subprocess.run([jcmd, pid, "JFR.dump", f"name={name}", f"filename={recording}"], capture_output=True,
                       timeout=60)
        subprocess.run([jcmd, pid, "JFR.stop", f"name={name}"], capture_output=True, timeout=60)
    summary = subprocess.run([jfr, "summary", str(recording)], check=True, capture_output=True, text=True,
                             timeout=60).stdout
    found = re.search(r"^\s*jdk\.ThreadStart\s+(\d+)", summary, re.MULTILINE)
    return int(found.group(1)) if found else 0


def test_the_frontend_starts_no_thread_per_batch(server, held_out, tmp_path):
    starts = thread_starts(server, png_bytes(held_out("lenet5").raw[0]), tmp_path / "threads.jfr")
    assert starts < REQUESTS // 4, f"{starts} threads started for {REQUESTS} one-request batches"
