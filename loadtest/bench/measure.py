"""One cell of the benchmark: a closed-loop client run against a server (with the server's CPU
metered) or forward passes in process, pooled over rounds into medians and percentiles; and the
machine it ran on."""
from __future__ import annotations

import importlib
import platform
import shutil
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from typing import Protocol, Sequence

import numpy as np
import psutil

from loadtest import client
from loadtest.bench.floor import FloorServer
from loadtest.bench.workload import Workload
from serving import proxy
from serving.server import Server
from settings.machine import cpu_model

CPU = dict[str, float]  # {"frontend": s, "worker": s, "proxy": s}: CPU seconds of Java, the Python workers, nginx
# (the floor: uvicorn's master as the frontend, its workers as the workers)


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
    proxy_cpu_s: float = 0.0

    def add(self, result: client.Result, cpu: CPU | None = None) -> None:
        """Pool one round's run (and its server's CPU seconds, None in process)."""
        self.rps.append(result.rps)
        self.ips.append(result.images_per_s)
        self.latencies.append(result.latencies_s)
        self.errors.update(result.errors)
        self.attempts += result.attempts
        self.client_cpu_s += result.client_cpu_s
        if cpu:
            self.frontend_cpu_s += cpu["frontend"]
            self.worker_cpu_s += cpu["worker"]
            self.proxy_cpu_s += cpu.get("proxy", 0.0)

    def summary(self, unit: str) -> dict:
        """Throughput in `unit` (median over rounds), latency percentiles in ms (pooled), errors, CPU us/request."""
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
            "proxy_cpu_us_per_req": per_request(self.proxy_cpu_s),
        }


class ProcessTreeCPU:
    """CPU seconds of a server that is one process and its children: TorchServe's Java frontend and
    its Python workers, or the floor's uvicorn master and its worker processes; the root counts as
    the frontend, the children as the workers; sampled with psutil."""

    def __init__(self, pid: int):
        try:
            self.root = psutil.Process(pid)
        except psutil.NoSuchProcess:
            raise ConnectionError(f"no live server process {pid}: did it stop?") from None
        self.children: dict[int, psutil.Process] = {}

    def sample(self) -> CPU:
        """CPU seconds so far (children that ended since the last sample no longer count)."""
        out = {"frontend": 0.0, "worker": 0.0, "proxy": 0.0}
        try:
            t = self.root.cpu_times()
            out["frontend"] = t.user + t.system
            for child in self.root.children(recursive=True):
                self.children.setdefault(child.pid, child)
        except psutil.Error:
            return out
        for pid, proc in list(self.children.items()):
            try:
                t = proc.cpu_times()
                out["worker"] += t.user + t.system
            except psutil.Error:
                self.children.pop(pid, None)
        return out

    @staticmethod
    def diff(after: CPU, before: CPU) -> CPU:
        return {k: max(0.0, after[k] - before[k]) for k in after}


class ServerCPU(ProcessTreeCPU):
    """CPU seconds of one TorchServe (ProcessTreeCPU of its frontend), and of the nginx in front of
    it when it is proxied."""

    def __init__(self, server: Server):
        pid = server.pid()
        if pid is None:
            raise ConnectionError(f"no live TorchServe frontend for {server.run_dir}: did it stop?")
        super().__init__(pid)
        nginx = proxy.pid(server.proxy_dir) if server.proxied else None
        self.nginx = [psutil.Process(nginx), *psutil.Process(nginx).children()] if nginx else []

    def sample(self) -> CPU:
        out = super().sample()
        for process in self.nginx:
            try:
                t = process.cpu_times()
                out["proxy"] += t.user + t.system
            except psutil.Error:
                pass
        return out


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


class Target(Protocol):
    """What one row (or tuning variant) measures: warm it once, then run it once per round and C."""

    def warm(self, duration_s: float) -> None: ...

    def run(self, concurrency: int, duration_s: float, warmup_s: float) -> tuple[client.Result, CPU | None]: ...


class Meter(Protocol):
    """A server's CPU seconds so far (ServerCPU, ProcessTreeCPU)."""

    def sample(self) -> CPU: ...


class ServerTarget:
    """Requests against one server, every answer checked, the server's CPU metered per run (`meter`:
    ServerCPU of a TorchServe by default)."""

    def __init__(self, server: Server | FloorServer, requests: Sequence[client.WireRequest], check: client.Check,
                 timeout_s: float, meter: Meter | None = None):
        self.url, self.requests, self.check, self.timeout_s = server.inference_url, requests, check, timeout_s
        self.meter = meter or ServerCPU(server)

    def warm(self, duration_s: float) -> None:
        """JIT of the frontend, TorchScript profiling runs, connection set-up: 16 in flight."""
        client.run(self.url, self.requests, self.check, 16, duration_s, timeout_s=self.timeout_s)

    def run(self, concurrency: int, duration_s: float, warmup_s: float) -> tuple[client.Result, CPU]:
        before = self.meter.sample()
        result = client.run(self.url, self.requests, self.check, concurrency, duration_s, warmup_s, self.timeout_s)
        return result, ServerCPU.diff(self.meter.sample(), before)


class ModelTarget:
    """The model alone in process: forward passes of min(C, batch_size) images."""

    def __init__(self, work: Workload, batch_size: int):
        self.work, self.batch_size = work, batch_size

    def warm(self, duration_s: float) -> None:
        """Nothing to warm: Workload.load already ran the model once."""

    def run(self, concurrency: int, duration_s: float, warmup_s: float) -> tuple[client.Result, None]:
        return in_process(self.work, min(concurrency, self.batch_size), duration_s, warmup_s), None


def machine() -> dict:
    """CPUs, memory (GiB), OS and the versions of Python, torch, TorchServe and Java."""
    info = {"cpus": psutil.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "cpu_model": cpu_model(), "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)}
    # from the modules themselves: a package put on the path without its dist-info has no metadata
    for name, module in (("torch", "torch"), ("torchserve", "ts.version")):
        try:
            info[name] = importlib.import_module(module).__version__
        except (ImportError, AttributeError):
            try:
                info[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                pass
    java = shutil.which("java")
    if java:
        out = subprocess.run([java, "-version"], capture_output=True, text=True)
        text = out.stderr or out.stdout
        info["java"] = text.splitlines()[0] if text else "?"
    return info


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages ([] where the OS has none)."""
    try:
        return [round(x, 2) for x in psutil.getloadavg()]
    except (OSError, AttributeError):
        return []

