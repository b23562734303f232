"""The floor's server (rows 7 and 9): FastAPI + uvicorn serving loadtest/floor/app.py from its own
virtualenv (`make floor-venv`: build/floor-venv from loadtest/floor/requirements.txt), one worker
process per core this process may use, on a loopback port. Started and waited for (every worker's
"Application startup complete."), its CPU metered over the master and its workers
(measure.ProcessTreeCPU), and stopped (master and workers, SIGTERM then SIGKILL), like the
TorchServe variants of servers.py.
"""
from __future__ import annotations

import os
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import psutil

from serving import processes
from serving.server import LaunchError
from serving.workers import usable_cpus
from settings.ports import HOST

ROOT = Path(__file__).resolve().parents[2]
FLOOR_PYTHON = ROOT / "build" / "floor-venv" / "bin" / "python"
FLOOR_APP = "loadtest.floor.app:app"
READY_LINE = "Application startup complete."  # uvicorn logs it once per worker, after the app is imported
START_TIMEOUT_S = 120.0
STOP_GRACE_S = 10.0


def floor_workers() -> int:
    """One uvicorn worker per core this process may use (its CPU affinity, or fewer where a cgroup
    CPU quota says so: serving/workers.py's usable_cpus)."""
    return max(1, int(usable_cpus()))


@dataclass(frozen=True)
class FloorServer:
    """One running Python server of ours outside TorchServe (the floor, a peer of make bench-peers):
    its root process, its port, its worker count and its log."""
    pid: int
    port: int
    workers: int
    log: Path

    @property
    def inference_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def processes(self) -> list[psutil.Process]:
        """The master and every process under it (the workers), those still alive."""
        try:
            master = psutil.Process(self.pid)
            return [master, *master.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []


def floor_versions(python: Path = FLOOR_PYTHON) -> dict[str, str]:
    """The versions the floor's interpreter imports (fastapi, uvicorn, torch, Python); {} without one."""
    if not Path(python).is_file():
        return {}
    code = ("import platform, fastapi, uvicorn, torch; "
            "print(platform.python_version(), fastapi.__version__, uvicorn.__version__, torch.__version__)")
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    if out.returncode != 0 or len(out.stdout.split()) != 4:
        return {}
    return dict(zip(("python", "fastapi", "uvicorn", "torch"), out.stdout.split()))


def _wait_ready(name: str, process: subprocess.Popen, log: Path, ready: int, timeout: float,
                ready_line: str = READY_LINE) -> None:
    """Until `ready` lines `ready_line` are in the log (uvicorn logs its READY_LINE once per server
    process); LaunchError (with the log's end) if the server exits or `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(errors="replace")
        if text.count(ready_line) >= ready:
            return
        if process.poll() is not None:
            raise LaunchError(f"{name} exited with {process.returncode} during start-up. "
                              f"The end of its log ({log}):\n" + "\n".join(text.splitlines()[-15:]))
        if time.monotonic() > deadline:
            raise LaunchError(f"{name} had {text.count(ready_line)} of {ready} server processes ready "
                              f"after {timeout:g} s. The end of its log ({log}):\n"
                              + "\n".join(text.splitlines()[-15:]))
        time.sleep(0.2)


@contextmanager
def floor_running(port: int, run_dir: Path, workers: int | None = None, python: Path = FLOOR_PYTHON,
                  timeout: float = START_TIMEOUT_S, log: Callable[[str], None] = print) -> Iterator[FloorServer]:
    """The floor on 127.0.0.1:`port` for the `with` block, its log in run_dir/uvicorn.log; always
    stopped afterwards. LaunchError says what to do when it cannot start."""
    python = Path(python)
    if not python.is_file():
        raise LaunchError(f"the floor's virtualenv is missing ({python}): run `make floor-venv` "
                          "(loadtest/floor/requirements.txt)")
    workers = workers or floor_workers()
    command = [str(python), "-m", "uvicorn", FLOOR_APP, "--host", HOST, "--port", str(port),
               "--workers", str(workers)]
    log(f"  starting the floor on {HOST}:{port} ({workers} uvicorn workers, {python})")
    with python_server_running("the floor (uvicorn)", command, port, run_dir / "uvicorn.log", workers,
                               workers, timeout) as server:
        yield server


@contextmanager
def python_server_running(name: str, command: list[str], port: int, log_path: Path, ready: int, workers: int,
                          timeout: float = START_TIMEOUT_S, ready_line: str = READY_LINE,
                          env: dict[str, str] | None = None) -> Iterator[FloorServer]:
    """`command` (a Python server of ours from its own virtualenv, the repo on its PYTHONPATH, listening on
    127.0.0.1:`port`, `env` added to this environment) for the `with` block, from when its log holds
    `ready` lines `ready_line` (uvicorn's startup line by default); then stopped, with every process
    under it (SIGTERM, then SIGKILL). LaunchError if it cannot start."""
    if processes.port_in_use(port):
        raise LaunchError(f"port {port} on {HOST} is taken, {name} cannot listen there: stop what holds it "
                          "or move the benchmark's ports (--port-base, BENCH_PORT_BASE; 0: free ports)")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}  # the repo's handlers/ and model_defs/
    with log_path.open("wb") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    server = FloorServer(process.pid, port, workers, log_path)
    try:
        _wait_ready(name, process, log_path, ready, timeout, ready_line)
        yield server
    finally:
        processes.end(server.processes(), grace=STOP_GRACE_S)
        process.wait(timeout=STOP_GRACE_S)
