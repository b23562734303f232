"""`make profile`: where the TorchServe worker's CPU goes under load, sampled by py-spy.

    python -m loadtest.profile_worker [--model lenet5] [--store model_store] [--concurrency 16]
                                      [--duration 8] [--svg docs/worker-profile.svg] [--summary docs/worker-profile.md]

One TorchServe started the way `make bench` starts its row-3 server (the container's logging,
TorchServe alone, loadtest/bench/servers.py) serves the store; the benchmark's client
(loadtest/client.py) keeps `--concurrency` requests in flight, one held-out PNG each, every answer
checked. Then, all bounded in time:

  1. warm-up: `--warmup` seconds of load (the JIT of the frontend, TorchScript's profiling runs);
  2. measure: `--duration` seconds of load without the profiler; the worker's CPU seconds (psutil)
     over the requests answered give its CPU per request, as the benchmark counts it;
  3. profile: `--duration` seconds of py-spy writing the flame graph (`--svg`), then `--duration`
     seconds of py-spy writing collapsed stacks, from which the summary's tables are counted; the
     load runs throughout. py-spy attaches with ptrace (root, or CAP_SYS_PTRACE).

The workers measured are those of the served model that did the work: the Python children of the
frontend whose CPU grew by at least a fifth of the busiest one's during the measuring window. One
such worker is profiled alone; several (TorchServe starts one per CPU) are profiled with every
Python process under the frontend (py-spy --subprocesses: one tower per process, idle ones add no
samples).
The summary (`--summary`, Markdown) gives the measured figures and the frames with the most samples:
by their own time (self), by area (our code, TorchServe, torch, numpy, ...), and our own functions
with everything they call (inclusive), each also as microseconds per request: its share of the
samples times the measured CPU per request.
"""
from __future__ import annotations

import argparse
import datetime as dt
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psutil

from loadtest import client
from loadtest.bench.servers import server_extra, servers_running
from loadtest.bench.workload import Workload, checker
from settings.model_serving import SERVING

ROOT = Path(__file__).resolve().parent.parent
PY_SPY = Path(sys.executable).parent / "py-spy"
BUSY_FRACTION = 0.2   # a worker is profiled when its CPU grew by at least this fraction of the busiest's
UNPACKED_MODEL_DIR = re.compile(r"[0-9a-f]{32}")
TOP = 15              # rows of each table in the summary
# a frame's file -> its area, first match wins (the archive's copy of the handler lies in the unpacked model dir)
AREAS = (("our handler (handlers/)", "/handlers/"), ("our handler (handlers/)", "/classifier_handler.py"),
         ("our preprocessing (model_defs/)", "/model_defs/"),
         ("TorchServe (ts/)", "/ts/"), ("torch", "/torch/"), ("numpy", "/numpy/"), ("scipy", "/scipy/"),
         ("PIL", "/PIL/"), ("Python's standard library", "/lib/python3"))


@dataclass
class Measured:
    """The measuring window without the profiler: requests answered and the profiled workers' CPU."""
    requests: int
    errors: int
    rps: float
    worker_cpu_s: float
    worker_pids: list[int]
    frontend_cpu_s: float = float("nan")  # the Java frontend's, over the same window

    @property
    def frontend_us_per_request(self) -> float:
        return self.frontend_cpu_s / self.requests * 1e6 if self.requests else float("nan")

    @property
    def worker_us_per_request(self) -> float:
        return self.worker_cpu_s / self.requests * 1e6 if self.requests else float("nan")


def worker_processes(frontend_pid: int) -> list[psutil.Process]:
    """The Python workers the TorchServe frontend started (its children, recursively)."""
    return [p for p in psutil.Process(frontend_pid).children(recursive=True) if "python" in p.name().lower()]


def cpu_seconds(processes: list[psutil.Process]) -> dict[int, float]:
    out = {}
    for process in processes:
        try:
            t = process.cpu_times()
            out[process.pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


def measure(url: str, requests, check, workers: list[psutil.Process], concurrency: int,
            duration_s: float, timeout_s: float, frontend: psutil.Process | None = None) -> Measured:
    """`duration_s` of closed-loop load; the workers that did the work and their CPU per request
    (and the frontend's, when given)."""
    ends = [frontend] if frontend is not None else []
    before, frontend_before = cpu_seconds(workers), cpu_seconds(ends)
    result = client.run(url, requests, check, concurrency, duration_s, timeout_s=timeout_s)
    after, frontend_after = cpu_seconds(workers), cpu_seconds(ends)
    grown = {pid: after[pid] - before[pid] for pid in after if pid in before}
    if not grown or max(grown.values()) <= 0:
        raise RuntimeError("no worker of the server used any CPU under load: is the model served?")
    busiest = max(grown.values())
    busy = sorted(pid for pid, s in grown.items() if s >= BUSY_FRACTION * busiest)
    frontend_s = sum(frontend_after[pid] - frontend_before[pid] for pid in frontend_after if pid in frontend_before)
    return Measured(result.requests, sum(result.errors.values()), result.rps,
                    sum(grown[pid] for pid in busy), busy, frontend_s if ends else float("nan"))


def py_spy(pid: int, duration_s: float, rate: int, fmt: str, out: Path, native: bool = False,
           subprocesses: bool = False) -> None:
    """py-spy record on `pid` (and, with `subprocesses`, every Python process under it: the
    frontend's workers, one flame graph, each worker a tower of its own) for `duration_s`.
    RuntimeError with py-spy's own words when it fails (no ptrace, say)."""
    # --nonblocking: read the stacks without pausing the worker (its timing stays as measured)
    command = [str(PY_SPY), "record", "--pid", str(pid), "--duration", str(int(duration_s)), "--rate", str(rate),
               "--format", fmt, "--function", "--full-filenames", "--output", str(out), "--nonblocking"]
    command += ["--native"] if native else []
    command += ["--subprocesses"] if subprocesses else []
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = job.communicate(timeout=duration_s + 60)
    except subprocess.TimeoutExpired:
        job.kill()
        output, _ = job.communicate()
    if job.returncode != 0:
        hint = ("\npy-spy needs ptrace: run as root or grant CAP_SYS_PTRACE (in a container: --cap-add "
                "SYS_PTRACE)") if "ermission" in output else ""
        raise RuntimeError(f"py-spy on process {pid} failed ({job.returncode}): {output.strip()[-800:]}{hint}")


def read_collapsed(paths: list[Path]) -> Counter:
    """py-spy's raw output ("frame;frame;... count" a line, outermost first) -> {stack tuple: samples}."""
    stacks: Counter = Counter()
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def area_of(frame: str) -> str:
    for area, marker in AREAS:
        if marker in frame:
            return area
    return "other"


def is_ours(frame: str) -> bool:
    return area_of(frame).startswith("our ")


def short(frame: str) -> str:
    """"name (/long/path/to/pkg/module.py:12)" -> "name (pkg/module.py:12)"."""
    name, _, where = frame.partition(" (")
    parts = where.rstrip(")").split("/")
    if len(parts) > 1 and UNPACKED_MODEL_DIR.fullmatch(parts[-2]):  # TorchServe's <uuid>/ of the archive
        parts = parts[-1:]
    return f"{name} ({'/'.join(parts[-2:])})" if len(parts) > 1 else f"{name} ({parts[-1]})"


def summarise(stacks: Counter, measured: Measured, context: dict) -> str:
    """The summary's Markdown: the measured figures, then self, area and inclusive tables."""
    total = sum(stacks.values())
    us = measured.worker_us_per_request
    own: Counter = Counter()
    areas: Counter = Counter()
    inclusive: Counter = Counter()
    for stack, n in stacks.items():
        own[stack[-1]] += n
        areas[area_of(stack[-1])] += n
        for frame in set(stack):
            if is_ours(frame):
                inclusive[frame] += n

    def table(title: str, counts: Counter, names=short) -> list[str]:
        rows = [f"| {names(k)} | {n} | {100 * n / total:.1f}% | {us * n / total:.0f} |"
                for k, n in counts.most_common(TOP)]
        return ["", f"{title}:", "", "| frame | samples | share | us per request |", "|---|---|---|---|", *rows]

    lines = [f"# Where the TorchServe worker's CPU goes under load ({context['model']})", "",
             f"`{context['command']}`, {context['date']}, {context['cpus']} CPUs, load average "
             f"{context['load']}: {context['concurrency']} requests in flight, one held-out PNG each, "
             f"store `{context['store']}`.", "",
             f"- measured without the profiler for {context['duration']:g} s: {measured.rps:,.0f} req/s, "
             f"{measured.requests:,} answers ({measured.errors} errors), worker CPU "
             f"**{us:.0f} us per request** (psutil, worker pid(s) {', '.join(map(str, measured.worker_pids))}); "
             f"the Java frontend {measured.frontend_us_per_request:.0f} us per request",
             f"- py-spy {context['py_spy']}: {total:,} samples of the worker(s) at {context['rate']} Hz over "
             f"{context['duration']:g} s (idle waits excluded), flame graph: `{context['svg']}` "
             "(a window of its own just before these samples)",
             "- us per request below = the frame's share of the samples x the measured CPU per request"]
    if total == 0:
        return "\n".join(lines + ["", "py-spy recorded no samples: was the worker busy?"]) + "\n"
    in_handle = sum(n for stack, n in stacks.items()
                    if any(f.startswith("handle (") and "classifier_handler.py" in f for f in stack))
    lines += ["", f"Inside our handler's `handle` (decode, batch, predict, encode): {100 * in_handle / total:.1f}% of "
              f"the samples, {us * in_handle / total:.0f} us per request; outside it (TorchServe's worker: "
              f"reading the batch from the socket, metrics, logging, writing the answers): "
              f"{100 * (total - in_handle) / total:.1f}%, {us * (total - in_handle) / total:.0f} us per request."]
    lines += table("By area (the file of the innermost frame)", areas, names=str)
    lines += table("Our functions, with everything they call (inclusive)", inclusive)
    lines += table("Innermost frames (self time)", own)
    return "\n".join(lines) + "\n"


def load_in_background(url: str, requests, check, concurrency: int, duration_s: float, timeout_s: float):
    """A client run in a thread (the profiler runs meanwhile); join it and read .result."""
    thread = threading.Thread(daemon=True, target=lambda: setattr(
        thread, "result", client.run(url, requests, check, concurrency, duration_s, timeout_s=timeout_s)))
    thread.start()
    return thread


def profile(args) -> int:
    if not PY_SPY.is_file():
        print(f"error: {PY_SPY} is missing: `make venv` installs py-spy (requirements.txt)", file=sys.stderr)
        return 1
    serving = SERVING[args.model]
    work = Workload.load(args.model, args.limit, serving.torch_threads)
    extra = server_extra("container")
    runs = {"profile": (Path(args.store).resolve(), extra)}
    with servers_running(runs, args.port_base, "profile-", keep_logs=False) as servers:
        server = servers["profile"]
        url = server.inference_url
        host, port = client.split_url(url)
        requests, check = work.single_requests(host, port), checker(args.model, "full")
        print(f"  warming up: {args.warmup:g} s at {args.concurrency} in flight")
        client.run(url, requests, check, args.concurrency, args.warmup, timeout_s=args.timeout)
        workers = worker_processes(server.pid())
        measured = measure(url, requests, check, workers, args.concurrency, args.duration, args.timeout,
                           psutil.Process(server.pid()))
        print(f"  measured: {measured.rps:,.0f} req/s, worker CPU {measured.worker_us_per_request:.0f} us per "
              f"request (workers {measured.worker_pids}), frontend {measured.frontend_us_per_request:.0f} us")
        if args.measure_only:
            return 0
        load = load_in_background(url, requests, check, args.concurrency, 2 * args.duration + 2, args.timeout)
        with tempfile.TemporaryDirectory(prefix="profile-") as tmp:
            time.sleep(1)
            # one worker: that process; several: all of them under the frontend, in one flame graph
            pid, several = ((measured.worker_pids[0], False) if len(measured.worker_pids) == 1
                            else (server.pid(), True))
            py_spy(pid, args.duration, args.rate, "flamegraph", Path(args.svg), args.native, several)
            raw = Path(tmp) / "workers.txt"
            py_spy(pid, args.duration, args.rate, "raw", raw, args.native, several)
            stacks = read_collapsed([raw])
            if args.raw:
                shutil.copyfile(raw, args.raw)
        load.join(timeout=2 * args.duration + 2 + args.timeout + 5)
    version = subprocess.run([str(PY_SPY), "--version"], capture_output=True, text=True).stdout.split()[-1]
    context = {"model": args.model, "command": args.command, "date": dt.date.today().isoformat(),
               "cpus": psutil.cpu_count(), "load": ", ".join(f"{x:.2f}" for x in psutil.getloadavg()),
               "concurrency": args.concurrency, "store": _shown(Path(args.store)), "duration": args.duration,
               "rate": args.rate, "py_spy": version, "svg": _shown(Path(args.svg))}
    text = summarise(stacks, measured, context)
    Path(args.summary).write_text(text)
    print(text)
    print(f"wrote {args.svg} and {args.summary}")
    return 0


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lenet5", choices=list(SERVING))
    parser.add_argument("--store", default=str(ROOT / "model_store"), help="the model store to serve")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--warmup", type=float, default=4.0, help="seconds of load before measuring")
    parser.add_argument("--duration", type=float, default=8.0,
                        help="seconds of each window: measuring, flame graph, collapsed stacks")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--native", action="store_true", help="py-spy --native: C/C++ frames too (slower)")
    parser.add_argument("--limit", type=int, default=None, help="the first N held-out images (default all)")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds to wait for one answer")
    parser.add_argument("--port-base", type=int, default=0, help="the server's ports (0: free ones)")
    parser.add_argument("--svg", default=str(ROOT / "docs" / "worker-profile.svg"))
    parser.add_argument("--summary", default=str(ROOT / "docs" / "worker-profile.md"))
    parser.add_argument("--measure-only", action="store_true",
                        help="stop after measuring (no py-spy, nothing written): for before/after runs")
    parser.add_argument("--raw", default=None, help="also keep py-spy's collapsed stacks in this file")
    parser.add_argument("--command", default="python -m loadtest.profile_worker", help="recorded in the summary")
    args = parser.parse_args(argv)
    if args.duration < 1 or args.duration > 120:
        parser.error("--duration: 1 to 120 seconds")
    if not shutil.which("java"):
        print("error: java is not on the PATH: TorchServe's frontend needs it", file=sys.stderr)
        return 1
    # a timeout's SIGTERM unwinds like Ctrl-C, so that the server started here is stopped
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    return profile(args)


if __name__ == "__main__":
    sys.exit(main())
