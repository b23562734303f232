"""`make bench-peers`: our served lenet5 (BENCHMARKS.md's row 3), the floor (row 7) and the serving
stacks a user might run instead (loadtest/peers/), side by side on the same held-out PNGs.

    python -m loadtest.bench.peers [--peers litserve] [--rounds 3] [--duration 5] [--concurrency 1 16 64]

Each peer runs from its own pinned virtualenv (`make peers-venv`: build/peers-venv/<peer>, from
loadtest/peers/<peer>-requirements.txt) with our per-image work (decode, limits, canonicalize, our
model.pt, our answer) and its own batching, one inference worker per core like the floor. Every
answer is checked (the contract and the model's own top-1); rounds are interleaved as in make bench,
and each server's CPU is metered over its process tree. Writes BENCHMARKS-PEERS.md (hand-written
notes below its marker survive) and results/bench-peers/<date>/peers.json.
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import shlex
import struct
import subprocess
import sys
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from export.archive import ArchiveError
from loadtest import client
from loadtest.archives import BUILD
from loadtest.bench.floor import (
    FLOOR_PYTHON,
    READY_LINE,
    FloorServer,
    floor_running,
    floor_workers,
    python_server_running,
)
from loadtest.bench.measure import ProcessTreeCPU, ServerTarget, load_average, machine
from loadtest.bench.report import KEEP_MARKER, kept_notes, ratio
from loadtest.bench.rounds import Entry, Schedule, run_rounds
from loadtest.bench.servers import PORT_STRIDE, server_extra, servers_running, store_for
from loadtest.bench.workload import FLOOR_MODEL, HANDLER, Workload, checker
from loadtest.peers import PYTRITON_READY
from model_defs.registry import get_spec
from serving.server import LaunchError
from settings.model_serving import SERVING
from settings.ports import HOST, Ports

ROOT = Path(__file__).resolve().parents[2]
MODEL = FLOOR_MODEL  # the peers serve lenet5, as the floor does
DEFAULT_PORT_BASE = 38300


def json_base64_requests(work: Workload, host: str, port: int) -> list[client.WireRequest]:
    """The same PNGs as the other rows, as JSON {"image": base64} (what LitServe decodes)."""
    path = f"/predictions/{work.model}"
    return [client.build_request(host, port, path, json.dumps({"image": base64.b64encode(png).decode()}).encode(),
                                 "application/json", label)
            for png, label in zip(work.pngs, work.model_labels)]


def triton_requests(work: Workload, host: str, port: int) -> list[client.WireRequest]:
    """The same PNGs as Triton inference requests (KServe v2, POST /v2/models/<model>/infer): the PNG as
    a BYTES tensor [1, 1] in the binary extension (a JSON header, then the 4-byte length and the
    bytes), the answer asked for as JSON; what tritonclient.http sends."""
    path = f"/v2/models/{work.model}/infer"
    out = []
    for png, label in zip(work.pngs, work.model_labels):
        header = json.dumps({"inputs": [{"name": "image", "shape": [1, 1], "datatype": "BYTES",
                                         "parameters": {"binary_data_size": len(png) + 4}}],
                             "outputs": [{"name": "probabilities", "parameters": {"binary_data": False}}]}).encode()
        body = header + struct.pack("<I", len(png)) + png
        out.append(client.build_request(host, port, path, body, "application/octet-stream", label,
                                        headers={"Inference-Header-Content-Length": str(len(header))}))
    return out


def triton_checker(model: str) -> client.Check:
    """200 and a probabilities tensor [1, classes] that sums to 1, whose top-1 is the expected label."""
    labels = get_spec(model).labels

    def check(status: int, body: bytes, expected) -> str | None:
        if status != 200:
            return f"status {status}"
        try:
            (output,) = json.loads(body)["outputs"]
            probabilities = output["data"]
        except (ValueError, KeyError, TypeError):
            return "triton: not an inference answer"
        if output["shape"] != [1, len(labels)] or abs(sum(probabilities) - 1.0) > 1e-3:
            return "triton: shape or sum"
        return None if labels[max(range(len(labels)), key=probabilities.__getitem__)] == expected else "wrong label"
    return check


@dataclass(frozen=True)
class Peer:
    """One serving stack a user might run instead: its app, its virtualenv, its requests and checks."""
    name: str
    title: str          # the row's title in BENCHMARKS-PEERS.md ({workers}: the worker count)
    module: str         # python -m <module> --host --port --workers
    package: str        # the distribution whose version the report records
    requests: Callable[[Workload, str, int], list[client.WireRequest]]
    check: Callable[[str], client.Check]
    ready_line: str = READY_LINE   # what its log says when it serves (uvicorn's, once per server process)
    ready_per_worker: bool = True  # LitServe: one uvicorn server process per inference worker
    needs_libpython: bool = False  # PyTriton's Python stub loads the interpreter's libpython

    @property
    def python(self) -> Path:
        return ROOT / "build" / "peers-venv" / self.name / "bin" / "python"

    @property
    def requirements(self) -> Path:
        return ROOT / "loadtest" / "peers" / f"{self.name}-requirements.txt"


PEERS = {
    "litserve": Peer("litserve", "LitServe, batching (max 16, 2 ms), {workers} inference workers, JSON base64 PNG",
                     "loadtest.peers.litserve_app", "litserve", json_base64_requests,
                     lambda model: checker(model, "full")),
    "pytriton": Peer("pytriton", "PyTriton (Triton), dynamic batching (max 16, 2 ms), {workers} instances, "
                     "KServe v2 binary", "loadtest.peers.pytriton_app", "nvidia-pytriton", triton_requests,
                     triton_checker, ready_line=PYTRITON_READY, ready_per_worker=False, needs_libpython=True),
}


def libpython_env(python: Path) -> dict[str, str]:
    """LD_LIBRARY_PATH with the directory of `python`'s libpython first: a virtualenv made from an
    interpreter outside the system's library path (pyenv, say) leaves PyTriton's Triton stub unable to
    load it."""
    code = "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"
    libdir = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60).stdout.strip()
    return {"LD_LIBRARY_PATH": os.pathsep.join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH", "")) if p)}


def peer_version(peer: Peer) -> str:
    """The peer's package version as its virtualenv imports it ("" without the virtualenv)."""
    if not peer.python.is_file():
        return ""
    code = f"import importlib.metadata as m; print(m.version({peer.package!r}))"
    out = subprocess.run([str(peer.python), "-c", code], capture_output=True, text=True, timeout=60)
    return out.stdout.strip() if out.returncode == 0 else ""


@contextmanager
def peer_running(peer: Peer, port: int, run_dir: Path, workers: int,
                 log: Callable[[str], None] = print) -> Iterator[FloorServer]:
    """The peer's app on 127.0.0.1:`port` for the `with` block (one uvicorn server process per
    inference worker, LitServe's default); LaunchError says what to do when it cannot start."""
    if not peer.python.is_file():
        raise LaunchError(f"{peer.name}'s virtualenv is missing ({peer.python}): run `make peers-venv` "
                          f"({peer.requirements.relative_to(ROOT)})")
    command = [str(peer.python), "-m", peer.module, "--host", HOST, "--port", str(port), "--workers", str(workers)]
    log(f"  starting {peer.name} on {HOST}:{port} ({workers} inference workers, {peer.python})")
    ready = workers if peer.ready_per_worker else 1
    env = libpython_env(peer.python) if peer.needs_libpython else None
    with python_server_running(peer.name, command, port, run_dir / f"{peer.name}.log", ready, workers,
                               ready_line=peer.ready_line, env=env) as server:
        yield server


def run_peers(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict:
    """Row 3 (our handler as make bench serves it), the floor and args.peers, interleaved -> results."""
    serving = SERVING[MODEL]
    workers = args.workers or floor_workers()
    peers = [PEERS[name] for name in args.peers]
    log(f"bench-peers: {MODEL}, concurrency {args.concurrency}, {args.rounds} round(s) x {args.duration:g} s "
        f"per cell (+{args.warmup:g} s warm-up), load average {load_average()}")
    work = Workload.load(MODEL, args.limit, serving.torch_threads)
    rows = [("ours", f"ours: TorchServe, our handler and batcher (BENCHMARKS.md row 3), {serving.batch_size} a batch"),
            ("floor", f"the floor: FastAPI + uvicorn, {workers} worker processes, no batching (row 7)")]
    rows += [(p.name, p.title.format(workers=workers)) for p in peers]
    port = (lambda i: args.port_base + PORT_STRIDE * i) if args.port_base else (lambda i: Ports.free().inference)
    with ExitStack() as stack:
        runs = {HANDLER: (store_for(HANDLER, MODEL, build=Path(args.build)), server_extra("container"))}
        servers = dict(stack.enter_context(servers_running(runs, args.port_base, "bench-peers-", False, log)))
        servers["floor"] = stack.enter_context(floor_running(port(1), Path(args.build) / "peers", workers,
                                                             FLOOR_PYTHON, log=log))
        for i, peer in enumerate(peers, start=2):
            servers[peer.name] = stack.enter_context(peer_running(peer, port(i), Path(args.build) / "peers",
                                                                  workers, log))
        started = dt.datetime.now(dt.timezone.utc)
        load_before = load_average()
        entries = []
        for key, title in rows:
            server = servers[HANDLER if key == "ours" else key]
            host, port_ = client.split_url(server.inference_url)
            peer = PEERS.get(key)
            requests = peer.requests(work, host, port_) if peer else work.single_requests(host, port_)
            check = peer.check(MODEL) if peer else checker(MODEL, "full")
            meter = None if key == "ours" else ProcessTreeCPU(server.pid)
            target = ServerTarget(server, requests, check, args.timeout, meter)
            entries.append(Entry(key, f"{title[:40]:<40}", "req/s", target))
        schedule = Schedule(tuple(args.concurrency), args.rounds, args.duration, args.warmup, args.server_warmup)
        cells = run_rounds(entries, schedule, log)
    return {
        "model": MODEL, "workers": workers, "concurrency": list(args.concurrency), "rounds": args.rounds,
        "duration_s": args.duration, "warmup_s": args.warmup, "server_warmup_s": args.server_warmup,
        "images": len(work.pngs), "versions": {p.name: peer_version(p) for p in peers},
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "load_average_before": load_before, "load_average_after": load_average(), "machine": machine(),
        "command": args.command,
        "rows": [{"key": key, "title": title, "cells": {str(c): cells[(key, c)].summary("req/s")
                                                        for c in args.concurrency}} for key, title in rows],
    }


def render(results: dict, kept: str) -> str:
    """BENCHMARKS-PEERS.md: the rows, then each row against ours and the floor, then the kept notes."""
    m = results["machine"]
    versions = ", ".join(f"{name} {v or '?'}" for name, v in results["versions"].items())
    lines = ["# Benchmarks against other serving stacks", "",
             f"Written by `make bench-peers` ({results['finished']}); do not edit above the marker line, the next "
             "run rewrites it. How: `loadtest/bench/peers.py`; the peers' apps: `loadtest/peers/`.", "",
             f"- **model**: `{results['model']}`; {results['images']} real held-out 28x28 PNGs, one per request "
             "(the peers' as JSON with the PNG in base64, the form they decode)",
             f"- **peers**: {versions}; each from its own pinned virtualenv (`make peers-venv`), doing our per-image "
             f"work, {results['workers']} inference workers (one per core, like the floor)",
             f"- **machine**: {m.get('cpu_model')}, {m.get('cpus')} CPUs; Python {m.get('python')}, torch "
             f"{m.get('torch')}, TorchServe {m.get('torchserve')}",
             f"- **load average** before {results['load_average_before']}, after {results['load_average_after']}",
             f"- **run**: {results['started']} to {results['finished']}, {results['rounds']} interleaved round(s) of "
             f"{results['duration_s']:g} s per cell after {results['warmup_s']:g} s warm-up, each server first "
             f"{results['server_warmup_s']:g} s under load; client and servers on the same machine",
             f"- **command**: `{results['command']}`", "",
             "| row | C | req/s (median) | rounds | p50 ms | p99 ms | errors | server CPU us/req |",
             "|---|---|---|---|---|---|---|---|"]
    for row in results["rows"]:
        for c, cell in row["cells"].items():
            cpu = cell["frontend_cpu_us_per_req"] + cell["worker_cpu_us_per_req"]
            lines.append(f"| {row['title']} | {c} | {cell['throughput']:,.0f} | "
                         f"{' / '.join(f'{v:,.0f}' for v in cell['throughput_rounds'])} | {cell['p50_ms']:.2f} | "
                         f"{cell['p99_ms']:.2f} | {sum(cell['errors'].values())} | {cpu:,.0f} |")
    rows = {row["key"]: row for row in results["rows"]}
    lines += ["", "Ours against each row: median req/s (and p50) ratios within this run.", "",
              "| against | C | ours / theirs, req/s | ours / theirs, p50 |", "|---|---|---|---|"]
    for key, row in rows.items():
        if key == "ours":
            continue
        for c, cell in row["cells"].items():
            mine = rows["ours"]["cells"][c]
            lines.append(f"| {row['title'].split(':')[0].split(',')[0]} | {c} | "
                         f"{ratio(mine['throughput'], cell['throughput']):.2f} | "
                         f"{ratio(mine['p50_ms'], cell['p50_ms']):.2f} |")
    return "\n".join(lines) + "\n\n" + KEEP_MARKER + "\n" + kept


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench.peers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", nargs="+", choices=list(PEERS), default=list(PEERS))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per cell and round")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up before each cell")
    parser.add_argument("--server-warmup", type=float, default=10.0, help="seconds each server is under load first")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N held-out images")
    parser.add_argument("--workers", type=int, default=0, help="the floor's and each peer's worker processes "
                                                               "(0: one per core this process may use)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for one answer")
    parser.add_argument("--port-base", type=int, default=int(os.environ.get("BENCH_PORT_BASE") or DEFAULT_PORT_BASE),
                        help="ours on BASE..BASE+2, the floor on +10, the peers on +20, +30, ... (0: free ports)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARKS-PEERS.md")
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "bench-peers")
    parser.add_argument("--build", type=Path, default=BUILD)
    parser.add_argument("--command", default=None, help="the command to record in the report")
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else argv
    args.command = args.command or "python -m loadtest.bench.peers " + " ".join(shlex.quote(a) for a in given)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        results = run_peers(args)
    except (LaunchError, ArchiveError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    folder = args.results / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "peers.json").write_text(json.dumps(results, indent=1))
    args.out.write_text(render(results, kept_notes(args.out)))
    print(render(results, "").split(KEEP_MARKER)[0])
    print(f"wrote {args.out} and {folder / 'peers.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
