"""make profile's parts that need no server: py-spy attached to a real busy Python process (ptrace
works here), its collapsed stacks read back, and the summary's tables counted from them."""
from __future__ import annotations

import os
import select
import subprocess
import sys
import time

import psutil
import pytest

from loadtest import profile_worker as pw

# a plain loop in one frame: with a generator inside, py-spy's --nonblocking read the generator's frame
# alone (its caller mid-change) in 14-17% of samples on a busy machine
BUSY = ("import os\ndef spin_here():\n    os.write(1, b'spinning\\n')\n    total = 0\n    while True:\n"
        "        for i in range(1000):\n            total += i * i\nspin_here()\n")


def spinning(process: subprocess.Popen, count: int = 1, timeout: float = 30.0) -> None:
    """Until `count` busy processes say they are in their loop (a fixed sleep is not enough on a busy machine)."""
    deadline, seen = time.monotonic() + timeout, b""
    while seen.count(b"spinning\n") < count:
        ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"the busy processes did not start within {timeout} s: {seen!r}"
        chunk = os.read(process.stdout.fileno(), 1024)  # unbuffered: select sees what is left
        assert chunk, f"the busy processes exited: {seen!r}"
        seen += chunk


def test_py_spy_samples_a_busy_python_process(tmp_path):
    if not pw.PY_SPY.is_file():
        pytest.fail(f"{pw.PY_SPY} is missing: requirements.txt pins py-spy; run `make venv`")
    busy = subprocess.Popen([sys.executable, "-c", BUSY], stdout=subprocess.PIPE)
    try:
        spinning(busy)
        out = tmp_path / "busy.txt"
        pw.py_spy(busy.pid, 1, 200, "raw", out)
    finally:
        busy.kill()
        busy.wait()
    stacks = pw.read_collapsed([out])
    samples = sum(stacks.values())
    assert samples >= 50  # 200 Hz for 1 s of a process that never waits
    in_loop = sum(n for stack, n in stacks.items() if any(f.startswith("spin_here ") for f in stack))
    assert in_loop >= 0.8 * samples  # --nonblocking reads a few stacks mid-change



def test_py_spy_follows_the_python_processes_under_a_parent_that_is_not_python(tmp_path):
    """As under TorchServe's Java frontend: one recording, every worker in it."""
    two = BUSY.replace("spin_here", "spin_there")
    parent = subprocess.Popen(["bash", "-c", f'{sys.executable} -c "{BUSY}" & {sys.executable} -c "{two}" & wait'],
                              start_new_session=True, stdout=subprocess.PIPE)
    try:
        spinning(parent, count=2)
        out = tmp_path / "both.txt"
        pw.py_spy(parent.pid, 1, 100, "raw", out, subprocesses=True)
    finally:
        for child in psutil.Process(parent.pid).children(recursive=True):
            child.kill()
        parent.kill()
        parent.wait()
    frames = {f.split(" ")[0] for stack in pw.read_collapsed([out]) for f in stack}
    assert {"spin_here", "spin_there"} <= frames

def test_py_spy_failure_says_what_failed(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with pytest.raises(RuntimeError, match=r"py-spy on process \d+ failed"):
        pw.py_spy(int(done.stdout), 1, 100, "raw", tmp_path / "gone.txt")


def test_summary_counts_self_area_and_inclusive_samples(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_text(
        "<module> (/v/ts/model_service_worker.py:1);handle (/x/handlers/classifier_handler.py:150);"
        "canonicalize (/r/model_defs/preprocessing.py:321);label (/v/scipy/ndimage/_measurements.py:43) 30\n"
        "<module> (/v/ts/model_service_worker.py:1);handle (/x/handlers/classifier_handler.py:150) 10\n"
        "<module> (/v/ts/model_service_worker.py:1);emit (/usr/lib/python3.11/logging/__init__.py:1098) 60\n")
    stacks = pw.read_collapsed([raw])
    assert sum(stacks.values()) == 100
    measured = pw.Measured(requests=1000, errors=0, rps=500.0, worker_cpu_s=0.5, worker_pids=[7], frontend_cpu_s=0.2)
    assert measured.worker_us_per_request == pytest.approx(500.0)
    context = dict(model="lenet5", command="make profile", date="2026-11-26", cpus=2, load="1.00",
                   concurrency=16, store="model_store", duration=8.0, rate=250, py_spy="0.4.2", svg="w.svg")
    text = pw.summarise(stacks, measured, context)
    assert "**500 us per request**" in text and "the Java frontend 200 us per request" in text
    assert "| Python's standard library | 60 | 60.0% | 300 |" in text   # by area
    assert "| scipy | 30 | 30.0% | 150 |" in text
    assert "| handle (handlers/classifier_handler.py:150) | 40 | 40.0% | 200 |" in text  # inclusive
    assert "| canonicalize (model_defs/preprocessing.py:321) | 30 | 30.0% | 150 |" in text
    assert "| label (ndimage/_measurements.py:43) | 30 | 30.0% | 150 |" in text  # self
    assert pw.short("handle (/tmp/models/befe7704c79d4e33a3dcb53eb7bb773b/classifier_handler.py:158)") == \
        "handle (classifier_handler.py:158)"
    assert "`handle` (decode, batch, predict, encode): 40.0% of the samples, 200 us" in text
    assert "outside it (TorchServe's worker: " in text and "60.0%, 300 us per request" in text

