"""Part 4 of `make bench-gpu`: the host memory of the GPU pod's server, as the GPU overlay runs it.

k8s/overlays/gpu/gpu.yaml gives the pod a CPU limit (from which serving/workers.py sizes the workers
per model) and a memory limit; every worker of every model runs on the one GPU. A CUDA worker holds
the CUDA runtime, cuBLAS and cuDNN in host memory, far more than a CPU worker, so whether that many
workers fit the limit is measured here, not guessed: one TorchServe with model_store/ as `make
archive` built it, number_of_gpu=1 and default_workers_per_model for the pod's CPUs, all workers
READY, each model's held-out PNGs sent at 16 in flight so every worker has run the model, then the
memory of the frontend and every worker (psutil). PSS splits the pages that processes share (the
CUDA libraries are mapped by every worker), so the sum of PSS over the tree is what the tree holds,
about what the pod's memory cgroup charges for it; nginx and the container's other processes are
not in it (a few MiB).
"""
from __future__ import annotations

import re
import statistics
import time
from pathlib import Path
from typing import Callable

import psutil
import yaml

from loadtest import client
from loadtest.bench.measure import ServerTarget
from loadtest.bench.servers import server_extra, servers_running
from loadtest.bench.workload import Workload, checker
from serving.workers import workers_per_model
from settings.model_serving import SERVING

ROOT = Path(__file__).resolve().parents[2]
GPU_OVERLAY = ROOT / "k8s" / "overlays" / "gpu" / "gpu.yaml"
MODEL_STORE = ROOT / "model_store"
LOAD_S = 3.0          # seconds of load per model, 16 in flight: every worker gets batches
READY_TIMEOUT_S = 240.0
MIB = 2**20
_QUANTITY = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<unit>Ki|Mi|Gi|Ti|k|M|G|T|m)?$")
_UNITS = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}

Log = Callable[[str], None]


def quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity as a number: "6Gi" -> 6442450944, "500m" -> 0.5, "4" -> 4."""
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError(f"resource quantity {value!r}: expected a number with an optional unit (4, 500m, 6Gi)")
    return float(match["n"]) * _UNITS[match["unit"]]


def pod_limits(overlay: Path = GPU_OVERLAY) -> dict:
    """{"cpus": ..., "memory_bytes": ...} of the TorchServe container's limits in the GPU overlay."""
    for doc in yaml.safe_load_all(overlay.read_text()):
        for container in (doc or {}).get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            limits = container.get("resources", {}).get("limits", {})
            if "cpu" in limits and "memory" in limits:
                return {"cpus": quantity(limits["cpu"]), "memory_bytes": quantity(limits["memory"])}
    raise ValueError(f"{overlay}: no container with CPU and memory limits")


def tree_memory(pid: int) -> dict:
    """The memory now of a process (TorchServe's frontend) and of each of its descendants (the
    workers), in MiB: {"frontend": {"rss", "pss"}, "workers": [{"pid", "rss", "pss"}, ...]}."""
    def one(process: psutil.Process) -> dict:
        info = process.memory_full_info()
        pss = getattr(info, "pss", info.rss)  # Linux has PSS; elsewhere RSS stands in
        return {"pid": process.pid, "rss": round(info.rss / MIB, 1), "pss": round(pss / MIB, 1)}

    root = psutil.Process(pid)
    workers = []
    for child in root.children(recursive=True):
        try:
            workers.append(one(child))
        except psutil.NoSuchProcess:
            pass
    return {"frontend": one(root), "workers": workers}


def measure(works: dict[str, Workload], number_of_gpu: int, port_base: int, log: Log,
            timeout_s: float = 30.0) -> dict:
    """Start the pod's server (number_of_gpu=0 in a rehearsal), load every model, read its memory."""
    limits = pod_limits()
    per_model = workers_per_model(limits["cpus"])
    extra = {**server_extra("container"), "number_of_gpu": str(number_of_gpu),
             "default_workers_per_model": str(per_model)}
    log(f"  the GPU pod's server: {len(SERVING)} models x {per_model} workers (pod CPU limit {limits['cpus']:g}), "
        f"number_of_gpu={number_of_gpu}")
    with servers_running({"pod": (MODEL_STORE, extra)}, port_base, "bench-gpu-pod-", False, log) as servers:
        server = servers["pod"]
        ready_s = _all_workers_ready(server, per_model)
        host, port = client.split_url(server.inference_url)
        answered = {}
        for model, work in works.items():
            if not work.pngs:  # a pack written before part 4 holds lenet5's PNGs only
                answered[model] = {"requests": 0, "errors": {"no held-out PNGs to send": 1}}
                continue
            target = ServerTarget(server, work.single_requests(host, port), checker(model, "full"), timeout_s)
            result, _ = target.run(16, LOAD_S, 0.5)
            answered[model] = {"requests": result.requests, "errors": dict(result.errors)}
        pid = server.pid()
        if pid is None:
            raise ConnectionError("the pod's server stopped under load (its logs: the run directory above)")
        memory = tree_memory(pid)
    pss = [w["pss"] for w in memory["workers"]]
    rss = [w["rss"] for w in memory["workers"]]
    total_mib = memory["frontend"]["pss"] + sum(pss)
    return {"pod_cpus": limits["cpus"], "pod_memory_mib": round(limits["memory_bytes"] / MIB),
            "workers_per_model": per_model, "models": list(SERVING), "number_of_gpu": number_of_gpu,
            "all_ready_s": ready_s, "answered": answered, "memory": memory,
            "worker_pss_median_mib": statistics.median(pss) if pss else None,
            "worker_pss_max_mib": max(pss, default=None),
            "worker_rss_median_mib": statistics.median(rss) if rss else None,
            "total_pss_mib": round(total_mib, 1),
            "share_of_limit": round(total_mib * MIB / limits["memory_bytes"], 3)}


def _all_workers_ready(server, per_model: int) -> float:
    """Seconds until every model has `per_model` READY workers (TimeoutError after READY_TIMEOUT_S)."""
    started = time.monotonic()
    while True:
        short = {m: sum(w.get("status") == "READY" for w in server.management.workers(m)) for m in SERVING}
        if all(n >= per_model for n in short.values()):
            return round(time.monotonic() - started, 1)
        if time.monotonic() - started > READY_TIMEOUT_S:
            raise TimeoutError(f"not every worker READY after {READY_TIMEOUT_S:.0f} s: {short} of {per_model} each")
        time.sleep(0.5)


def render(result: dict | None, rehearsal: bool) -> list[str]:
    """Part 4's section of BENCHMARKS-GPU.md."""
    lines = ["## 4. Host memory of the GPU pod's server", ""]
    if not result:
        return lines + ["Not measured: the run stopped before this part.", ""]
    if "error" in result:
        return lines + ["Not measured: " + result["error"][:2000], ""]
    n = result["workers_per_model"] * len(result["models"])
    where = "on the CPU (rehearsal: number_of_gpu=0)" if rehearsal else "every one on the GPU (number_of_gpu=1)"
    mem = result["memory"]
    errors = sum(sum(a["errors"].values()) for a in result["answered"].values())
    lines += [
        f"The GPU overlay's pod (k8s/overlays/gpu/gpu.yaml): CPU limit {result['pod_cpus']:g} -> "
        f"{result['workers_per_model']} workers per model (serving/workers.py) x {len(result['models'])} models = "
        f"{n} workers, {where}; all READY {result['all_ready_s']:g} s after the server was; each model's held-out "
        f"PNGs sent for {LOAD_S:g} s at 16 in flight ("
        + ", ".join(f"{m} {a['requests']:,}" for m, a in result["answered"].items())
        + f" answers, {errors} errors); then psutil's RSS and PSS of every process of the server.", "",
        "| process | count | RSS MiB (median) | PSS MiB (median) | PSS MiB (sum) |",
        "|---|---|---|---|---|",
        f"| frontend (Java) | 1 | {mem['frontend']['rss']:,.0f} | {mem['frontend']['pss']:,.0f} | "
        f"{mem['frontend']['pss']:,.0f} |",
        f"| workers | {len(mem['workers'])} | {result['worker_rss_median_mib'] or 0:,.0f} | "
        f"{result['worker_pss_median_mib'] or 0:,.0f} | {sum(w['pss'] for w in mem['workers']):,.0f} |",
        f"| **all** | {len(mem['workers']) + 1} | | | **{result['total_pss_mib']:,.0f}** |", "",
        f"Reading: the server holds {result['total_pss_mib']:,.0f} MiB (PSS) of the pod's "
        f"{result['pod_memory_mib']:,} MiB limit ({result['share_of_limit']:.0%}); the largest worker "
        f"{result['worker_pss_max_mib'] or 0:,.0f} MiB.", ""]
    return lines
