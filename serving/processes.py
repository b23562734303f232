"""The operating system's side of a TorchServe, through psutil: which processes are a run dir's
server, whether a pid is alive, ending them with grace, resident memory, free ports.
"""
from __future__ import annotations

import socket
import time
from pathlib import Path

import psutil

from settings.ports import HOST


def alive(pid: int, argument: str | None = None) -> bool:
    """True for a live process (not a zombie) whose command line has `argument` as one of its
    arguments, when given: a recycled pid, even another server's Java, is not ours."""
    try:
        process = psutil.Process(pid)
        if process.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
            return False
        return argument is None or argument in process.cmdline()
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # someone else's process: alive, but not ours to judge by its arguments
        return argument is None


def server_processes(tmp_dir: Path) -> list[psutil.Process]:
    """Every live process of the server whose temp dir is `tmp_dir`: Java (its java.io.tmpdir) and
    the Python workers (their sockets live in it), orphans of a frontend killed with -9 included."""
    java_flag = f"-Djava.io.tmpdir={tmp_dir}"
    socket_prefix = f"{tmp_dir}/.ts.sock."
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = process.info["cmdline"] or []
        if process.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if java_flag in cmdline or any(arg.startswith(socket_prefix) for arg in cmdline):
            found.append(process)
    return found


def wait_exited(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until each process has exited, a zombie counting as exited: a daemon's parent is init,
    which reaps it when it gets to it (1-2 s later in some containers), and psutil's wait waits for
    the reaping. Returns those still running after `timeout`."""
    deadline, running = time.monotonic() + timeout, list(processes)
    while running:
        running = [process for process in running if alive(process.pid) and process.is_running()]
        if not running or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    return running


def end(processes: list[psutil.Process], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL what is still running after `grace` seconds; waits until they have exited."""
    for process in processes:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    still_running = wait_exited(processes, grace)
    for process in still_running:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    wait_exited(still_running, grace)


def rss(pid: int) -> int:
    """Resident memory of `pid` in bytes, 0 when the process is gone."""
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.Error:
        return 0


def port_in_use(port: int, host: str = HOST) -> bool:
    """True when `port` on `host` cannot be bound (something listens on it or holds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False
