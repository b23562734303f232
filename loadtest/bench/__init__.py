"""`make bench`: one run, one client, five rows that bound our serving stack; writes BENCHMARKS.md.

    python -m loadtest.bench [--duration 5] [--rounds 3] [--concurrency 1 16 64] [--port-base 38100]
                             [--out BENCHMARKS.md] [--plot loadtest/benchmarks.png] [--smoke]

Rows, for one model (lenet5), at each concurrency C (C requests in flight, closed loop):
1. the model alone, in process, one forward pass at a time on a batch of min(C, serving batch
   size) canonical images, with the serving torch threads: the compute limit (images/s);
2. TorchServe with a no-op handler (loadtest/noop_handler.py) and the same model-config: what
   the stack itself costs (req/s);
3. our handler and archive, as served (serving/settings.py);
4. our handler with batchSize 1;
5. our handler, N images per request ({"instances": [...]}, images/s).
Rows 2-5 run against three TorchServe servers started here, each from its own run directory and
ports (--port-base, +10, +20), driven by the same asyncio client (loadtest/client.py). On a
shared machine other load comes and goes, so the cells are interleaved: every round runs every
row at every concurrency once, and each row's figures pool its rounds. Every answer is checked:
status, JSON contract, and top-1 equal to what the exported model itself answers for that image
(so a served answer that differs from the model is an error; the model's own held-out mistakes
are not).
"""
from __future__ import annotations

import argparse
import base64
import datetime as dt
import io
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from handlers import contract
from loadtest import client
from loadtest.archives import BUILD, variant_store
from pipeline.archive import ArchiveError
from pipeline.heldout import held_out
from model_defs.preprocessing import canonicalize
from model_defs.registry import get_spec
from serving.server import LaunchError, Server, running_together
from handlers.limits import LIMITS
from serving.settings import HOST, JOB_QUEUE_SIZE, Ports
from pipeline.model_config import SERVING, ModelServing

ROOT = Path(__file__).resolve().parent.parent
KEEP_MARKER = "<!-- notes below this line are written by hand; make bench keeps them -->"
DEFAULT_PORT_BASE = 38100


@dataclass(frozen=True)
class Row:
    key: str
    title: str
    unit: str          # "images/s" or "req/s"
    server: str | None  # the server variant it runs against; None: in process


def rows_for(model: str, images_per_request: int) -> list[Row]:
    s = SERVING[model]
    return [
        Row("model", f"1. {model} alone, in process, batch min(C, {s.batch_size}), {s.torch_threads} thread(s)",
            "images/s", None),
        Row("noop", f"2. TorchServe, no-op handler, same settings", "req/s", "noop"),
        Row("ours", f"3. our handler, batch {s.batch_size} / {s.max_batch_delay_ms} ms", "req/s", "ours"),
        Row("batch1", "4. our handler, batch size 1", "req/s", "batch1"),
        Row("multi", f"5. our handler, {images_per_request} images per request", "images/s", "ours"),
    ]


# ---- answers ---------------------------------------------------------------------------------
def checker(model: str, kind: str):
    """kind "full": the contract (handlers/contract.py) and top-1 of one answer; "list": of a list
    of answers; "status": only 200 and a JSON object (the no-op handler's constant answer)."""
    labels = get_spec(model).labels

    def check(status: int, body: bytes, expected):
        if status != 200:
            return f"HTTP {status}"
        try:
            answer = json.loads(body)
        except ValueError:
            return "contract: not JSON"
        if kind == "status":
            return None if isinstance(answer, dict) else "contract: not an object"
        try:
            if kind == "list":
                top, expected = contract.check_predictions(answer, labels, len(expected), model), list(expected)
            else:
                top = contract.check_prediction(answer, labels, model)
        except contract.ContractError as err:
            return f"contract: {err.part}"
        return None if top == expected else "top-1 differs from the model"
    return check


@dataclass
class Workload:
    model: str
    pngs: tuple[bytes, ...]
    canonical: np.ndarray        # [N, H, W] uint8, what the handler feeds the model
    model_labels: list[str]      # the exported model's own top-1 for each image
    true_labels: tuple[str, ...]
    scripted: object

    @classmethod
    def load(cls, model: str, limit: int | None, threads: int) -> "Workload":
        import torch
        torch.set_num_threads(threads)
        spec = get_spec(model)
        data = held_out(model, limit)
        raw = [np.asarray(Image.open(io.BytesIO(p))) for p in data.pngs]  # exactly what is sent
        canonical = np.stack([canonicalize(img, spec.preprocessing, spec.input_size) for img in raw])
        path = ROOT / "artifacts" / model / "model.pt"
        if not path.is_file():
            raise ArchiveError(f"{path} is missing: run `make export` first")
        scripted = torch.jit.load(str(path)).eval()
        with torch.inference_mode():
            probabilities = scripted(torch.from_numpy(canonical).unsqueeze(1)).numpy()
        labels = [spec.labels[i] for i in probabilities.argmax(axis=1)]
        return cls(model, data.pngs, canonical, labels, data.labels, scripted)

    def single_requests(self, host: str, port: int) -> list[client.Request]:
        path = f"/predictions/{self.model}"
        return [client.build_request(host, port, path, png, "image/png", label)
                for png, label in zip(self.pngs, self.model_labels)]

    def multi_requests(self, host: str, port: int, per_request: int, count: int = 32) -> list[client.Request]:
        path = f"/predictions/{self.model}"
        b64 = [base64.b64encode(p).decode("ascii") for p in self.pngs]
        n = len(b64)
        requests = []
        for r in range(count):
            picks = [(r * per_request + i) % n for i in range(per_request)]
            body = json.dumps({"instances": [b64[i] for i in picks]}).encode("utf-8")
            requests.append(client.build_request(host, port, path, body, "application/json",
                                                 [self.model_labels[i] for i in picks], per_request))
        return requests


# ---- measurements ----------------------------------------------------------------------------
@dataclass
class Cell:
    """One row at one concurrency, pooled over rounds."""
    rps: list[float] = field(default_factory=list)
    ips: list[float] = field(default_factory=list)
    latencies: list[np.ndarray] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    attempts: int = 0
    client_cpu_s: float = 0.0
    frontend_cpu_s: float = 0.0
    worker_cpu_s: float = 0.0

    def add(self, result: client.Result, cpu: dict | None = None):
        self.rps.append(result.rps)
        self.ips.append(result.images_per_s)
        self.latencies.append(result.latencies_s)
        self.errors.update(result.errors)
        self.attempts += result.attempts
        self.client_cpu_s += result.client_cpu_s
        if cpu:
            self.frontend_cpu_s += cpu["frontend"]
            self.worker_cpu_s += cpu["worker"]

    def summary(self, unit: str) -> dict:
        lat = np.concatenate(self.latencies) if self.latencies else np.array([])
        pct = (lambda q: float(np.percentile(lat, q) * 1000)) if lat.size else (lambda q: float("nan"))
        values = self.ips if unit == "images/s" else self.rps
        per_request = (lambda s: s / self.attempts * 1e6) if self.attempts else (lambda s: float("nan"))
        return {
            "throughput": float(np.median(values)) if values else 0.0,
            "throughput_rounds": [round(v, 1) for v in values],
            "req_per_s": float(np.median(self.rps)) if self.rps else 0.0,
            "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
            "requests": int(lat.size), "errors": dict(self.errors), "attempts": self.attempts,
            "error_rate": sum(self.errors.values()) / self.attempts if self.attempts else 0.0,
            "client_cpu_us_per_req": per_request(self.client_cpu_s),
            "frontend_cpu_us_per_req": per_request(self.frontend_cpu_s),
            "worker_cpu_us_per_req": per_request(self.worker_cpu_s),
        }


def in_process(work: Workload, batch: int, duration_s: float, warmup_s: float) -> client.Result:
    """Row 1: forward passes back to back on real canonical images, `batch` at a time."""
    import torch
    n = len(work.canonical)
    batches = [torch.from_numpy(work.canonical[np.arange(i, i + batch) % n]).unsqueeze(1)
               for i in range(0, n, batch)]
    latencies, completions = [], []
    errors: Counter = Counter()
    cpu_before = time.process_time()
    start = time.perf_counter()
    window_open = start + warmup_s
    deadline = window_open + duration_s
    k = 0
    with torch.inference_mode():
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline:
                break
            out = work.scripted(batches[k % len(batches)])
            k += 1
            t1 = time.perf_counter()
            if t0 >= window_open:
                if out.shape[0] != batch:
                    errors["wrong output shape"] += 1
                    continue
                latencies.append(t1 - t0)
                completions.append(t1 - window_open)
    cpu = time.process_time() - cpu_before
    return client.Result(batch, duration_s, np.asarray(latencies), np.asarray(completions),
                         np.full(len(latencies), batch, dtype=np.int64), errors, cpu)


class ServerCPU:
    """CPU seconds of one TorchServe: the Java frontend and its Python workers, sampled with psutil."""

    def __init__(self, server: Server):
        import psutil
        self.psutil = psutil
        self.java = psutil.Process(server.pid())
        self.workers: dict[int, object] = {}

    def sample(self) -> dict:
        psutil = self.psutil
        out = {"frontend": 0.0, "worker": 0.0}
        try:
            t = self.java.cpu_times()
            out["frontend"] = t.user + t.system
            for child in self.java.children(recursive=True):
                self.workers.setdefault(child.pid, child)
        except psutil.Error:
            return out
        for pid, proc in list(self.workers.items()):
            try:
                t = proc.cpu_times()
                out["worker"] += t.user + t.system
            except psutil.Error:
                self.workers.pop(pid, None)
        return out

    @staticmethod
    def diff(after: dict, before: dict) -> dict:
        return {k: max(0.0, after[k] - before[k]) for k in after}


def machine() -> dict:
    info = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        info["cpu_model"] = model.group(1).strip() if model else platform.processor()
    except OSError:
        info["cpu_model"] = platform.processor()
    try:
        mem = re.search(r"^MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text(), re.M)
        info["memory_gib"] = round(int(mem.group(1)) / 1024 / 1024, 1)
    except (OSError, AttributeError):
        pass
    try:
        import torch
        import ts.version  # noqa: F401
        info["torch"] = torch.__version__
        from importlib.metadata import version
        info["torchserve"] = version("torchserve")
    except Exception:  # versions are informative only
        pass
    java = shutil.which("java")
    if java:
        out = subprocess.run([java, "-version"], capture_output=True, text=True)
        info["java"] = (out.stderr or out.stdout).splitlines()[0] if (out.stderr or out.stdout) else "?"
    return info


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# ---- the run ---------------------------------------------------------------------------------
CONTAINER_LOG4J = ROOT / "docker" / "log4j2.xml"


def server_extra(logging: str) -> dict:
    """config.properties lines for the benchmark servers beyond the local profile: the JVM options
    and the logging of the production container (docker/log4j2.xml, stdout only, no per-request
    lines; stdout lands in <run dir>/logs/console.log), or TorchServe's own log4j2.xml
    ("torchserve": five log files, several lines per request) to measure what logging costs."""
    from serving.config import PRODUCTION
    vmargs = PRODUCTION.get("vmargs", "")
    if logging == "container":
        if not CONTAINER_LOG4J.is_file():
            raise ArchiveError(f"{CONTAINER_LOG4J} is missing; run with --logging torchserve")
        vmargs = f"{vmargs} -Dlog4j.configurationFile=file://{CONTAINER_LOG4J}".strip()
    elif logging != "torchserve":
        raise ValueError(f"logging {logging!r}: expected container or torchserve")
    return {"vmargs": vmargs} if vmargs else {}


@contextmanager
def servers_running(runs: dict[str, tuple[Path, dict | None]], port_base: int, run_root: Path, keep_logs: bool,
                    log=print) -> Iterator[dict[str, Server]]:
    """One server per run {name: (model store, extra config)} on port_base + 10 * i (+1 management,
    +2 metrics) in run_root/<name>, started together and stopped at the end; run_root is removed
    then unless keep_logs (and kept when a start fails: the error names its logs)."""
    starts = {}
    for i, (name, (store, extra)) in enumerate(runs.items()):
        ports = Ports.at(port_base + 10 * i)
        log(f"  starting the {name} server on {HOST}:{ports.inference} (store {store})")
        starts[name] = dict(run_dir=run_root / re.sub(r"[^A-Za-z0-9_.-]", "_", name), model_store=store,
                            ports=ports, timeout=240, extra=extra or None)
    started = False
    try:
        with running_together(starts) as servers:
            started = True
            yield servers
    finally:
        if started and not keep_logs:
            shutil.rmtree(run_root, ignore_errors=True)


def run_bench(args, log=print) -> dict:
    model = args.model
    serving = SERVING[model]
    rows = rows_for(model, args.images_per_request)
    log(f"bench: {model}, concurrency {args.concurrency}, {args.rounds} round(s) x {args.duration:g} s "
        f"per cell (+{args.warmup:g} s warm-up), load average {load_average()}")
    work = Workload.load(model, args.limit, serving.torch_threads)
    run_root = Path(tempfile.mkdtemp(prefix="bench-", dir=args.results))
    build = Path(args.build)
    extra = server_extra(args.logging)
    variants = {variant: (variant_store(variant, model, build=build), extra) for variant in ("noop", "ours", "batch1")}
    with servers_running(variants, args.port_base, run_root, args.keep_logs, log) as servers:
        cells = {(row.key, c): Cell() for row in rows for c in args.concurrency}
        started = dt.datetime.now(dt.timezone.utc)
        load_before = load_average()
        requests = {}
        for variant, server in servers.items():
            host, port = client.split_url(server.inference_url)
            requests[variant] = work.single_requests(host, port)
        host, port = client.split_url(servers["ours"].inference_url)
        requests["multi"] = work.multi_requests(host, port, args.images_per_request)
        checks = {"noop": checker(model, "status"), "ours": checker(model, "full"),
                  "batch1": checker(model, "full"), "multi": checker(model, "list")}
        cpu = {variant: ServerCPU(server) for variant, server in servers.items()}
        # warm every server (JIT of the frontend, TorchScript profiling runs, connection set-up)
        for key in ("noop", "ours", "batch1", "multi"):
            row = next(r for r in rows if r.key == key)
            client.run(servers[row.server].inference_url, requests[key], checks[key], 16,
                       args.warmup * 2, timeout_s=args.timeout)
        for round_index in range(args.rounds):
            order = rows[round_index % len(rows):] + rows[: round_index % len(rows)]  # rotate the order
            for c in args.concurrency:
                for row in order:
                    if row.server is None:
                        result = in_process(work, min(c, serving.batch_size), args.duration, args.warmup)
                        cells[(row.key, c)].add(result)
                    else:
                        meter = cpu[row.server]
                        before = meter.sample()
                        result = client.run(servers[row.server].inference_url, requests[row.key],
                                            checks[row.key], c, args.duration, args.warmup, args.timeout)
                        cells[(row.key, c)].add(result, ServerCPU.diff(meter.sample(), before))
                    log(f"  round {round_index + 1}/{args.rounds}  C={c:<3} {row.title[:48]:<48} "
                        f"{(result.images_per_s if row.unit == 'images/s' else result.rps):9.1f} {row.unit:<8} "
                        f"p99 {result.percentile_ms(99):7.1f} ms  errors {sum(result.errors.values())}")
    finished = dt.datetime.now(dt.timezone.utc)
    return {
        "model": model,
        "settings": {"batch_size": serving.batch_size, "max_batch_delay_ms": serving.max_batch_delay_ms,
                     "workers": serving.workers, "torch_threads": serving.torch_threads,
                     "response_timeout_s": serving.response_timeout_s, "job_queue_size": JOB_QUEUE_SIZE},
        "logging": args.logging, "server_extra": extra,
        "concurrency": list(args.concurrency),
        "rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup,
        "images_per_request": args.images_per_request, "images": len(work.pngs),
        "started": started.isoformat(timespec="seconds"), "finished": finished.isoformat(timespec="seconds"),
        "load_average_before": load_before, "load_average_after": load_average(),
        "machine": machine(),
        "command": args.command or "python -m loadtest.bench " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "rows": [{"key": r.key, "title": r.title, "unit": r.unit,
                  "cells": {str(c): cells[(r.key, c)].summary(r.unit) for c in args.concurrency}} for r in rows],
    }


# ---- targets and report ----------------------------------------------------------------------
def targets(results: dict) -> list[dict]:
    rows = {r["key"]: r for r in results["rows"]}
    conc = [str(c) for c in results["concurrency"]]
    top = str(max(results["concurrency"]))
    mid = "16" if "16" in conc else conc[len(conc) // 2]

    def tp(key, c):
        return rows[key]["cells"][c]["throughput"]

    def ratio(a, b):
        return a / b if b else float("nan")

    out = [
        {"target": f"row 3 >= 0.85 x row 2 at C={top} (our handler costs little over the stack)",
         "value": ratio(tp("ours", top), tp("noop", top)), "bound": 0.85},
        {"target": f"row 3 >= 2 x row 4 at C={top} (batching earns its keep)",
         "value": ratio(tp("ours", top), tp("batch1", top)), "bound": 2.0},
        {"target": f"row 5 >= 10 x row 3 in images/s at C={top}",
         "value": ratio(tp("multi", top), tp("ours", top)), "bound": 10.0},
    ]
    for t in out:
        t["met"] = bool(t["value"] >= t["bound"])
        t["shown"] = f"{t['value']:.2f}"
    errors = sum(sum(cell["errors"].values()) for r in results["rows"] for cell in r["cells"].values())
    out.append({"target": "zero errors in every row", "value": errors, "bound": 0, "met": errors == 0,
                "shown": f"{errors} errors"})
    p99 = rows["ours"]["cells"][mid]["p99_ms"]
    out.append({"target": f"row 3 p99 at C={mid} under 100 ms", "value": p99, "bound": 100.0,
                "met": bool(p99 < 100.0), "shown": f"{p99:.1f} ms"})
    return out


def render_markdown(results: dict, plot_name: str | None, kept: str) -> str:
    m = results["machine"]
    s = results["settings"]
    conc = [str(c) for c in results["concurrency"]]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` ({results['finished']}); do not edit above the marker line at the end,",
        "the next run rewrites it. What the rows mean and how they are measured: `loadtest/bench.py`;",
        "why the serving settings are what they are: the docstring of `serving/settings.py`.",
        "",
        f"- **model**: `{results['model']}`; {results['images']} real held-out images sent as PNG "
        f"(rows 2-4 one per request, row 5 {results['images_per_request']} per request as base64 JSON)",
        f"- **settings** (serving/settings.py): batchSize {s['batch_size']}, maxBatchDelay {s['max_batch_delay_ms']} ms, "
        f"{s['workers']} worker, {s['torch_threads']} torch thread(s) per worker, job queue {s['job_queue_size']}",
        "- **servers**: " + ("the local profile of serving/config.py (127.0.0.1) with the production "
                             "container's JVM options and logging (docker/log4j2.xml: stdout only, no "
                             "per-request lines)" if results.get("logging", "container") == "container" else
                             "the local profile of serving/config.py (127.0.0.1) with TorchServe's own "
                             "log4j2.xml (log files, several lines per request)") + "; three servers, one per "
                             "variant, the other two models loaded but idle",
        f"- **machine**: {m.get('cpu_model', '?')}, {m.get('cpus')} CPUs, {m.get('memory_gib', '?')} GiB; "
        f"{m.get('platform')}; Python {m.get('python')}, torch {m.get('torch', '?')}, TorchServe "
        f"{m.get('torchserve', '?')}, {m.get('java', 'java ?')}",
        f"- **load average** (1/5/15 min) before {results['load_average_before']}, after "
        f"{results['load_average_after']}: other work on the machine shares its cores, compare rows as ratios",
        f"- **run**: {results['started']} to {results['finished']}, {results['rounds']} interleaved round(s) of "
        f"{results['duration_s']:g} s per cell after {results['warmup_s']:g} s warm-up; "
        f"client and servers on the same machine",
        f"- **command**: `{results['command']}`",
        "",
        "## Results",
        "",
        "Throughput is the median over rounds (req/s, or images/s where the unit says); latency",
        "percentiles pool every request of every round. C = requests in flight (closed loop; for",
        "row 1, the batch size of one forward pass is min(C, batchSize)).",
        "",
        "| row | unit | C | throughput | p50 ms | p95 ms | p99 ms | errors | rounds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        for c in conc:
            cell = row["cells"][c]
            errors = sum(cell["errors"].values())
            error_text = f"{errors} ({cell['error_rate']:.2%})" if errors else "0"
            if errors:
                error_text += ": " + ", ".join(f"{k} x{v}" for k, v in cell["errors"].items())
            lines.append(f"| {row['title']} | {row['unit']} | {c} | {cell['throughput']:,.0f} | "
                         f"{cell['p50_ms']:.2f} | {cell['p95_ms']:.2f} | {cell['p99_ms']:.2f} | {error_text} | "
                         f"{' / '.join(f'{v:,.0f}' for v in cell['throughput_rounds'])} |")
    lines += ["", "## Targets (ratios within this run)", "", "| target | measured | met |", "|---|---|---|"]
    for t in targets(results):
        lines.append(f"| {t['target']} | {t['shown']} | {'yes' if t['met'] else '**no**'} |")
    lines += [
        "",
        "## Where the CPU goes (per request, all rounds)",
        "",
        "CPU time of the TorchServe frontend (Java), its Python worker(s) and this client, divided by",
        "the requests sent; on 2 cores the three compete, so their sum bounds the throughput.",
        "",
        "| row | C | frontend us | worker us | client us |",
        "|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        if row["key"] == "model":
            continue
        for c in conc:
            cell = row["cells"][c]
            lines.append(f"| {row['title']} | {c} | {cell['frontend_cpu_us_per_req']:,.0f} | "
                         f"{cell['worker_cpu_us_per_req']:,.0f} | {cell['client_cpu_us_per_req']:,.0f} |")
    if plot_name:
        lines += ["", f"![throughput and p99 latency per row]({plot_name})"]
    lines += ["", KEEP_MARKER, kept.rstrip("\n")]
    return "\n".join(lines).rstrip("\n") + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    conc = results["concurrency"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for row in results["rows"]:
        label = f"{row['title']} ({row['unit']})"
        left.plot(conc, [row["cells"][str(c)]["throughput"] for c in conc], marker="o", label=label)
        if row["key"] != "model":
            right.plot(conc, [row["cells"][str(c)]["p99_ms"] for c in conc], marker="o", label=row["title"])
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks(conc, [str(c) for c in conc])
        axis.set_xlabel("concurrency (requests in flight)")
        axis.grid(True, alpha=0.3)
    left.set_yscale("log")
    left.set_ylabel("throughput (req/s or images/s, see legend)")
    right.set_ylabel("p99 latency (ms)")
    left.set_title("throughput")
    right.set_title("p99 latency")
    left.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{results['model']}: {results['started']} on {results['machine'].get('cpus')} CPUs "
                 f"({results['machine'].get('cpu_model', '')})", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def kept_notes(path: Path) -> str:
    if not path.is_file():
        return ""
    text = path.read_text()
    return text.split(KEEP_MARKER, 1)[1].lstrip("\n") if KEEP_MARKER in text else ""


def write_outputs(results: dict, out: Path, plot_path: Path, results_dir: Path) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "bench.json").write_text(json.dumps(results, indent=1))
    plot(results, plot_path)
    if plot_path.parent.resolve() != (results_dir.resolve()):
        shutil.copy2(plot_path, results_dir / plot_path.name)
    relative = os.path.relpath(plot_path.resolve(), out.resolve().parent)
    out.write_text(render_markdown(results, relative, kept_notes(out)))


# ---- tuning sweep (make bench-tune) ----------------------------------------------------------
SPEC = re.compile(r"^(?:(?P<base>noop|ours)|b(?P<b>\d+)d(?P<d>\d+)w(?P<w>\d+)t(?P<t>\d+))"
                  r"(?P<flags>(\+(async|tslog))*)$")


def parse_spec(spec: str, model: str):
    """"ours", "noop" or "b16d5w1t1" (batch, delay ms, workers, torch threads), with optional
    "+async" (async_logging=true) and "+tslog" (TorchServe's own log4j2.xml instead of the
    container's) -> (variant, serving, config.properties extra lines)."""
    match = SPEC.match(spec)
    if not match:
        raise ValueError(f"tuning variant {spec!r}: expected ours, noop or b<batch>d<delay>w<workers>t<threads>, "
                         "optionally followed by +async and/or +tslog (e.g. b32d5w1t1+tslog)")
    extra = server_extra("torchserve" if "+tslog" in match["flags"] else "container")
    if "+async" in match["flags"]:
        extra["async_logging"] = "true"
    if match["base"]:
        return match["base"], None, extra
    serving = ModelServing(batch_size=int(match["b"]), max_batch_delay_ms=int(match["d"]),
                           workers=int(match["w"]), torch_threads=int(match["t"]),
                           response_timeout_s=SERVING[model].response_timeout_s)
    return "tune-" + spec.split("+")[0], serving, extra


def run_tune(args, log=print) -> dict:
    """Our handler (or the no-op) under several settings, one image per request, rows interleaved."""
    model = args.model
    specs = {spec: parse_spec(spec, model) for spec in args.tune}
    work = Workload.load(model, args.limit, SERVING[model].torch_threads)
    run_root = Path(tempfile.mkdtemp(prefix="tune-", dir=args.results))
    stores = {spec: variant_store(v, model, serving, build=Path(args.build) / "tune")
              for spec, (v, serving, _) in specs.items()}
    cells = {(spec, c): Cell() for spec in specs for c in args.concurrency}
    load_before = load_average()
    runs = {spec: (stores[spec], extra) for spec, (_, _, extra) in specs.items()}
    with servers_running(runs, args.port_base, run_root, args.keep_logs, log) as servers:
        requests, checks, meters = {}, {}, {}
        for spec, server in servers.items():
            host, port = client.split_url(server.inference_url)
            requests[spec] = work.single_requests(host, port)
            checks[spec] = checker(model, "status" if specs[spec][0] == "noop" else "full")
            meters[spec] = ServerCPU(server)
            client.run(server.inference_url, requests[spec], checks[spec], 16, args.warmup * 2, timeout_s=args.timeout)
        names = list(specs)
        for round_index in range(args.rounds):
            order = names[round_index % len(names):] + names[: round_index % len(names)]
            for c in args.concurrency:
                for spec in order:
                    before = meters[spec].sample()
                    result = client.run(servers[spec].inference_url, requests[spec], checks[spec], c,
                                        args.duration, args.warmup, args.timeout)
                    cells[(spec, c)].add(result, ServerCPU.diff(meters[spec].sample(), before))
                    log(f"  round {round_index + 1}/{args.rounds}  C={c:<3} {spec:<22} {result.rps:8.1f} req/s  "
                        f"p99 {result.percentile_ms(99):7.1f} ms  errors {sum(result.errors.values())}")
    return {"model": model, "variants": list(specs), "concurrency": list(args.concurrency),
            "rounds": args.rounds, "duration_s": args.duration, "load_average_before": load_before,
            "load_average_after": load_average(), "machine": machine(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": args.command or "python -m loadtest.bench " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "cells": {f"{spec} C={c}": cells[(spec, c)].summary("req/s") for spec in specs for c in args.concurrency}}


def render_tune(results: dict) -> str:
    lines = [f"Tuning sweep, {results['model']}, {results['date']}, {results['rounds']} interleaved round(s) of "
             f"{results['duration_s']:g} s per cell, load average before {results['load_average_before']} after "
             f"{results['load_average_after']}; `{results['command']}`", "",
             "| variant | C | req/s (median) | rounds | p50 ms | p99 ms | errors | frontend us/req | worker us/req | client us/req |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for spec in results["variants"]:
        for c in results["concurrency"]:
            cell = results["cells"][f"{spec} C={c}"]
            lines.append(f"| {spec} | {c} | {cell['throughput']:,.0f} | {' / '.join(f'{v:,.0f}' for v in cell['throughput_rounds'])} | "
                         f"{cell['p50_ms']:.1f} | {cell['p99_ms']:.1f} | {sum(cell['errors'].values())} | "
                         f"{cell['frontend_cpu_us_per_req']:,.0f} | {cell['worker_cpu_us_per_req']:,.0f} | "
                         f"{cell['client_cpu_us_per_req']:,.0f} |")
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lenet5", choices=list(SERVING))
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per cell and round")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up before each cell")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images-per-request", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N held-out images")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for one answer")
    parser.add_argument("--port-base", type=int, default=int(os.environ.get("BENCH_PORT_BASE") or DEFAULT_PORT_BASE),
                        help="servers on BASE..BASE+2, +10, +20 (env BENCH_PORT_BASE)")
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--plot", type=Path, default=ROOT / "loadtest" / "benchmarks.png")
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "bench")
    parser.add_argument("--build", type=Path, default=BUILD)
    parser.add_argument("--command", default=None, help="the command to record in the report")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' run directories")
    parser.add_argument("--logging", choices=("container", "torchserve"), default="container",
                        help="TorchServe's logging in the servers: the production container's docker/log4j2.xml "
                             "(default) or TorchServe's own log4j2.xml")
    parser.add_argument("--tune", nargs="+", metavar="VARIANT", default=None,
                        help="instead of the five rows: a tuning sweep of our handler under these settings, "
                             "e.g. ours b32d5w1t1 b16d2w1t1 b16d5w2t1 ours+quiet noop (see parse_spec); "
                             "prints a table and writes results/bench/tune-<date>.json, not BENCHMARKS.md")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds-long run (CI): 1 round of 0.5 s per cell, 64 images, 8 per request")
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.warmup, args.rounds = min(args.duration, 0.5), min(args.warmup, 0.2), 1
        args.limit = args.limit or 64
        args.images_per_request = min(args.images_per_request, 8)
    if not 1 <= args.images_per_request <= LIMITS.max_images_per_request:
        parser.error(f"--images-per-request must be 1..{LIMITS.max_images_per_request} "
                     "(InputLimits.max_images_per_request in handlers/limits.py)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    args.results.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    results_dir = args.results / stamp
    if args.tune:
        try:
            results = run_tune(args)
        except (LaunchError, ArchiveError, ConnectionError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        (args.results / f"tune-{stamp}.json").write_text(json.dumps(results, indent=1))
        print("\n" + render_tune(results) + f"\nwrote {args.results / f'tune-{stamp}.json'}")
        return 0
    try:
        results = run_bench(args)
    except (LaunchError, ArchiveError, ConnectionError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    write_outputs(results, args.out, args.plot, results_dir)
    print(f"\nwrote {args.out}, {args.plot} and {results_dir}/bench.json\n")
    print(render_markdown(results, None, "").split("## Where")[0].split("## Results", 1)[1].strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
