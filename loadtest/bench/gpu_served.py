"""Part 3 of `make bench-gpu`: lenet5 on TorchServe servers started together, CPU and CUDA variants,
one held-out PNG per request through the tuning sweep's round loop, and the device each server's
workers reported in its logs."""
from __future__ import annotations

import argparse
import dataclasses
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

from export.archive import ArchiveError
from loadtest import client
from loadtest.bench.measure import ServerTarget, load_average
from loadtest.bench.rounds import Entry, Schedule, run_rounds
from loadtest.bench.servers import servers_running, store_for
from loadtest.bench.tuning import Variant, parse_variant
from loadtest.bench.workload import Workload, checker
from serving.server import LaunchError
from settings.model_serving import SERVING

MODEL = "lenet5"  # the one served and timed, as in make bench


def _variant(workers: int | None = None, batch: int | None = None) -> str:
    """lenet5's served settings (settings/model_serving.py) as a tuning variant, workers/batch changed
    (one worker unless given: the served archive leaves the count to the server)."""
    s = SERVING[MODEL]
    return f"b{batch or s.batch_size}d{s.max_batch_delay_ms}w{workers or s.workers or 1}t{s.torch_threads}"


CPU_VARIANTS = (_variant(), _variant(workers=4))                     # + "+cpu"; the first is the baseline
CUDA_VARIANTS = (_variant(), _variant(2), _variant(4), _variant(2, 64))  # number_of_gpu=1
# the served part's failures: no server or archive, a missing launcher or file, nothing listening, a bad variant
SERVED_ERRORS = (LaunchError, ArchiveError, OSError, ValueError)
READY = re.compile(r"\b(?P<model>[A-Za-z0-9_]+) ready on (?P<device>[a-z]+(?::\d+)?)")
FRONTEND_GPUS = re.compile(r"Number of GPUs: (?P<n>\d+)")

Log = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class ServedVariant:
    """One server of part 3: its label, the tuning variant it runs, the device its workers should use."""
    label: str      # "cpu b16d2w1t1" or "cuda b16d2w2t1"
    kind: str       # "cpu" or "cuda": what the variant is meant to measure
    expect: str     # the device type its lenet5 workers should report ("cpu" in a rehearsal)
    variant: Variant


def served_variants(cpu_specs, cuda_specs, rehearsal: bool, model: str = MODEL) -> dict[str, ServedVariant]:
    """CPU variants get +cpu (number_of_gpu=0); CUDA variants number_of_gpu=1 explicitly (0 in a
    rehearsal, where their workers stand in on the CPU). ValueError on a bad spec."""
    out: dict[str, ServedVariant] = {}
    for spec in cpu_specs:
        spec = spec if spec.endswith("+cpu") or "+cpu+" in spec else spec + "+cpu"
        variant = parse_variant(spec, model)
        label = "cpu " + spec.replace("+cpu", "")
        out[label] = ServedVariant(label, "cpu", "cpu", variant)
    for spec in cuda_specs:
        if "+cpu" in spec:
            raise ValueError(f"CUDA variant {spec!r}: +cpu switches the GPUs off; list it under --cpu-variants")
        variant = parse_variant(spec, model)
        if variant.serving is None:
            raise ValueError(f"CUDA variant {spec!r}: expected b<batch>d<delay>w<workers>t<threads>")
        variant = dataclasses.replace(variant, extra={**variant.extra, "number_of_gpu": "0" if rehearsal else "1"})
        label = "cuda " + spec
        out[label] = ServedVariant(label, "cuda", "cpu" if rehearsal else "cuda", variant)
    return out


def frontend_gpu_env(visible: str | None, nvidia_smi_ok: bool) -> tuple[str | None, str]:
    """(a CUDA_VISIBLE_DEVICES to set for the servers or None, what was decided). TorchServe 0.12's
    frontend caps number_of_gpu at the GPUs it counts: CUDA_VISIBLE_DEVICES parsed as integers,
    else `nvidia-smi --query-gpu=index`; with neither it counts 0 and every worker runs on the CPU."""
    if visible:
        if all(part.strip().isdigit() for part in visible.split(",")):
            return None, f"CUDA_VISIBLE_DEVICES={visible}: TorchServe's frontend counts those GPUs"
        return None, (f"warning: CUDA_VISIBLE_DEVICES={visible} is not a list of indices; TorchServe 0.12's "
                      "frontend parses it as integers and may fail to start (the served table will say)")
    if nvidia_smi_ok:
        return None, "nvidia-smi answers: TorchServe's frontend counts the GPUs with it"
    return "0", ("no nvidia-smi: CUDA_VISIBLE_DEVICES=0 set for the servers so that TorchServe's frontend "
                 "counts the GPU (this process's cuda:0)")


def worker_devices(log_dir: Path) -> dict:
    """{"devices": {model: [device per worker start]}, "frontend_gpus": n or None} from one server's
    logs: the handler's "<model> ready on <device>" lines and the frontend's "Number of GPUs: n"
    (the log file that has most of them: MODEL_LOG goes to one file, whatever the logging)."""
    best: dict = {"devices": {}, "frontend_gpus": None}
    best_count = -1
    for log in sorted(Path(log_dir).glob("*.log")):
        devices: dict[str, list[str]] = {}
        gpus = None
        for line in log.read_text(errors="replace").splitlines():
            if " ready on " in line and (match := READY.search(line)):
                devices.setdefault(match["model"], []).append(match["device"])
            elif gpus is None and (found := FRONTEND_GPUS.search(line)):
                gpus = int(found["n"])
        count = sum(len(v) for v in devices.values())
        if count > best_count or (count == best_count and best["frontend_gpus"] is None):
            best, best_count = {"devices": devices, "frontend_gpus": gpus if gpus is not None else
                                best["frontend_gpus"]}, count
    return best


def served_preflight() -> list[str]:
    """What the servers need and this machine lacks, all of it at once (serving/server.py and
    export/archive.py run the launchers next to this Python)."""
    problems = []
    for tool in ("torchserve", "torch-model-archiver"):
        if not (Path(sys.executable).parent / tool).is_file():
            problems.append(f"no {tool} next to {sys.executable} ({Path(sys.executable).parent / tool})")
    if shutil.which("java") is None:
        problems.append("no java on the PATH (TorchServe's frontend needs Java 11+)")
    try:
        import ts  # noqa: F401 - the workers' package; missing, every worker dies
    except ImportError as err:
        problems.append(f"TorchServe's Python package is missing ({err})")
    return problems


def served(args: argparse.Namespace, work: Workload, variants: dict[str, ServedVariant], log: Log,
           on_measured: Callable[[dict], None] = lambda _: None) -> dict:
    """The variants' servers started together, one PNG per request, interleaved rounds; the device
    each server's workers reported. `on_measured` gets the results before the servers stop."""
    problems = served_preflight()
    if problems:
        raise LaunchError("; ".join(problems))
    stores: dict[str, Path] = {}
    runs = {}
    for label, v in variants.items():
        if v.variant.server not in stores:
            stores[v.variant.server] = store_for(v.variant.server, MODEL, v.variant.serving, build=args.build)
        # the idle models get one worker each: the server's default, from the CPUs, is many on a large machine
        runs[label] = (stores[v.variant.server], {**v.variant.extra, "default_workers_per_model": "1"})
    schedule = Schedule(tuple(args.concurrency), args.rounds, args.duration, args.warmup)
    load_before = load_average()
    started = time.monotonic()
    with servers_running(runs, args.port_base, "bench-gpu-", args.keep_logs, log) as servers:
        start_s = time.monotonic() - started
        log(f"  {len(servers)} servers READY after {start_s:.0f} s")
        entries = []
        for label, server in servers.items():
            host, port = client.split_url(server.inference_url)
            target = ServerTarget(server, work.single_requests(host, port), checker(MODEL, "full"), args.timeout)
            entries.append(Entry(label, f"{label:<16}", "req/s", target))
        cells = run_rounds(entries, schedule, log)
        reported = {label: worker_devices(server.log_dir) for label, server in servers.items()}
        results = {
            "model": MODEL, "images": len(work.pngs), "variants": list(variants), "baseline": next(iter(variants)),
            "concurrency": list(args.concurrency), "rounds": args.rounds, "duration_s": args.duration,
            "warmup_s": args.warmup, "start_s": round(start_s, 1),
            "load_average_before": load_before, "load_average_after": load_average(),
            "servers": {label: {"kind": v.kind, "expect": v.expect, "extra": v.variant.extra,
                                "serving": dataclasses.asdict(v.variant.serving) if v.variant.serving else None,
                                **reported[label]} for label, v in variants.items()},
            "cells": {f"{label} C={c}": cells[(label, c)].summary("req/s") for label in variants
                      for c in args.concurrency},
        }
        on_measured(results)  # written before the servers stop
        stopping = time.monotonic()  # servers_running stops them all at once as the block ends
    results["stop_s"] = round(time.monotonic() - stopping, 1)
    return results
