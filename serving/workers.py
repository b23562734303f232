"""How many TorchServe workers each model gets: from the CPUs the server may use where it starts.

The archives name no worker count (settings/model_serving.py): they are shared by the CPU and the GPU
image and by this machine, and TorchServe lets an archive's minWorkers override the server's
setting. So `default_workers_per_model` in config.properties decides, rendered by serving/config.py
from `configured_workers()` where the server starts: in the pod (docker/entrypoint.sh) the
container's CPU limit (cgroup), here this machine's CPUs. WORKERS_PER_MODEL overrides it.

Why CPUs and not GPUs: workers on the GPU served what as many on the CPU did (docs/BENCHMARKS-GPU.md):
each request's decode, canonicalise and JSON bound a worker, not the model. So a GPU pod gets as many
workers as a CPU pod with the same CPUs, all on its GPU.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

ENV = "WORKERS_PER_MODEL"
CGROUP = Path("/sys/fs/cgroup")
# The worker's share of the server's CPU per request behind nginx (the rest is TorchServe's frontend
# and nginx; docs/BENCHMARKS.md's CPU table): workers beyond cpus x share would wait for that CPU.
WORKER_SHARE = 0.78


def cgroup_cpu_limit(root: Path = CGROUP) -> float | None:
    """The CPUs a container's CPU quota allows (a Kubernetes `limits.cpu`), None without a quota.
    cgroup v2: cpu.max holds "<quota> <period>" or "max <period>"; v1: cpu.cfs_quota_us (-1: none)
    over cpu.cfs_period_us."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for v1 in (root / "cpu", root / "cpu,cpuacct"):
        try:
            quota_us = int((v1 / "cpu.cfs_quota_us").read_text())
            period_us = int((v1 / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    return None


def usable_cpus(root: Path = CGROUP) -> float:
    """The CPUs this process may run on (its affinity), or fewer where a CPU quota says so."""
    cpus = float(len(os.sched_getaffinity(0)))
    limit = cgroup_cpu_limit(root)
    return min(cpus, limit) if limit else cpus


def workers_per_model(cpus: float) -> int:
    """As many one-thread workers as the CPUs can keep busy beside the frontend and the proxy:
    2 CPUs -> 2, 4 -> 3, 16 -> 12; at least 1 (the runs behind it: settings/README.md)."""
    return max(1, math.floor(cpus * WORKER_SHARE + 0.5))


def configured_workers(env=os.environ, root: Path = CGROUP) -> int:
    """WORKERS_PER_MODEL when set (a positive integer), else workers_per_model(usable_cpus())."""
    value = env.get(ENV, "").strip()
    if not value:
        return workers_per_model(usable_cpus(root))
    if not value.isdigit() or not 1 <= int(value) <= 256:
        raise ValueError(f"{ENV}={value!r}: expected a whole number of workers per model, 1-256 "
                         "(leave it unset to size from the CPUs)")
    return int(value)
