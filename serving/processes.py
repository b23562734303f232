"""The operating system's side of a TorchServe, through psutil: which processes are a run dir's
server, whether a pid is alive, ending them with grace, resident memory, free ports.
"""
from __future__ import annotations

import socket
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


def end(processes: list[psutil.Process], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL what is still alive after `grace` seconds; waits until they are gone."""
    for process in processes:
        try:
            process.terminate()
        except psutil.NoSuchProcess:
            pass
    _, still_alive = psutil.wait_procs(processes, timeout=grace)
    for process in still_alive:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(still_alive, timeout=grace)


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
