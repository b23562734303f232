"""`make bench-gpu`: our handler and TorchServe on a CUDA device, beside the CPU they run on today.

    python -m loadtest.bench.gpu [--rounds 2] [--duration 3] [--concurrency 1 16 64] [--limit N]
                                 [--out docs/BENCHMARKS-GPU.md] [--results results/bench-gpu] [--cpu-rehearsal]

Without a CUDA device (torch.cuda.is_available() false) it says so and exits 0. With one:
1. parity: the handler's predict (handlers/classifier_handler.py) on every model's canonical
   held-out images, batches of 16, on the CPU and on cuda:0: the largest |p_cpu - p_cuda| and the
   top-1 agreement, as served (PyTorch's defaults: cuDNN may use TF32 for convolutions) and with
   TF32 off; the target is 1e-5;
2. in process: lenet5's predict in images/s at batch 1, 16, 64 and 256, the CPU with one torch
   thread (as served) and CUDA (predict copies the answer back to the host, which synchronises);
   the median of --repeats timed runs;
3. served: lenet5 on TorchServe servers started together (loadtest/bench/servers.py), one
   held-out PNG per request, through the tuning sweep's round loop (tuning.py, rounds.py): the CPU
   baseline as served today (e.g. b16d1w1t1+cpu) and four CPU workers, both with TorchServe's GPUs off
   (+cpu: number_of_gpu=0), and the same handler with number_of_gpu=1 and 1, 2 and 4 workers on the
   one GPU, and 2 workers with batches of 64. The device each server's lenet5 workers reported
   ("lenet5 ready on cuda:0", logged by the handler at initialize) is read from the servers' logs
   before they are removed, so the table shows where the workers really ran.
It writes BENCHMARKS-GPU.md and the raw results as JSON (results/bench-gpu/) after the first two
parts and again after the third, so a run stopped during the servers' rounds keeps its tables; a
server start that fails is printed and recorded, and the first two tables are written anyway.

--cpu-rehearsal runs the very same code with the CUDA device replaced by the CPU and the "CUDA"
servers' GPUs off too, labelled "rehearsal (no GPU)" everywhere, into
results/bench-gpu-rehearsal/: a machine without a GPU proves the program end to end.

The held-out images come from the data sets (export/heldout.py via Workload.load) the first
time and are packed into build/bench-gpu/inputs.npz (--inputs; a few MB: the canonical images of
each model, lenet5's PNGs and the true labels, keyed by each model's sha256): a machine that has
the artifacts, the archives and that file needs neither the data sets nor scikit-learn.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from export import artifacts
from export.archive import ArchiveError
from loadtest import client
from loadtest.archives import BUILD
from loadtest.bench import pod_memory
from loadtest.bench.measure import ServerTarget, load_average, machine
from loadtest.bench.report import KEEP_MARKER, kept_notes
from loadtest.bench.rounds import Entry, Schedule, run_rounds
from loadtest.bench.servers import PORT_STRIDE, servers_running, store_for
from loadtest.bench.tuning import Variant, parse_variant
from loadtest.bench.workload import Workload, checker
from serving.server import LaunchError, stop
from settings.model_serving import SERVING

ROOT = Path(__file__).resolve().parents[2]
REHEARSAL = "rehearsal (no GPU)"
MODEL = "lenet5"                        # the one served and timed (as make bench)
PARITY_BATCH = 16
PARITY_TARGET = 1e-5
BATCHES = (1, 16, 64, 256)
def _variant(workers: int | None = None, batch: int | None = None) -> str:
    """lenet5's served settings (settings/model_serving.py) as a tuning variant, workers/batch changed
    (one worker unless given: the served archive leaves the count to the server)."""
    s = SERVING["lenet5"]
    return f"b{batch or s.batch_size}d{s.max_batch_delay_ms}w{workers or s.workers or 1}t{s.torch_threads}"


CPU_VARIANTS = (_variant(), _variant(workers=4))                     # + "+cpu"; the first is the baseline
CUDA_VARIANTS = (_variant(), _variant(2), _variant(4), _variant(2, 64))  # number_of_gpu=1
DEFAULT_PORT_BASE = 38100
INPUTS = ROOT / "build" / "bench-gpu" / "inputs.npz"
# what the served part can fail with: a server or archive that did not start or build, a missing
# launcher or file (OSError), nothing listening (ConnectionError is an OSError), a bad variant
SERVED_ERRORS = (LaunchError, ArchiveError, OSError, ValueError)
READY = re.compile(r"\b(?P<model>[A-Za-z0-9_]+) ready on (?P<device>[a-z]+(?::\d+)?)")
FRONTEND_GPUS = re.compile(r"Number of GPUs: (?P<n>\d+)")

Log = Callable[[str], None]


# ---- the served variants ----------------------------------------------------------------------
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


def nvidia_smi(*query: str) -> list[str] | None:
    """nvidia-smi's output lines for `query`, None when it is missing or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, *query], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return lines if out.returncode == 0 and lines else None


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


# ---- the held-out images ---------------------------------------------------------------------
def _sha(model: str) -> str:
    return str(artifacts.manifest(model).get("sha256", ""))


def workload_from(model: str, pngs: tuple[bytes, ...], canonical: np.ndarray, true_labels: tuple[str, ...]) -> Workload:
    """A Workload from stored images: the model's own top-1 is computed here, on this machine's CPU."""
    import torch
    labels = list(artifacts.manifest(model)["labels"])
    scripted = artifacts.scripted_model(model)
    with torch.inference_mode():
        probabilities = scripted(torch.from_numpy(canonical).unsqueeze(1)).numpy()
    return Workload(model, pngs, canonical, [labels[i] for i in probabilities.argmax(axis=1)], true_labels, scripted)


def read_pack(path: Path, models) -> dict[str, Workload]:
    """The models whose images the pack holds for their current model.pt (sha256), as Workloads."""
    if not Path(path).is_file():
        return {}
    out = {}
    with np.load(path, allow_pickle=False) as pack:
        for model in models:
            if f"{model}__canonical" not in pack.files or str(pack[f"{model}__sha256"]) != _sha(model):
                continue
            pngs: tuple[bytes, ...] = ()
            if f"{model}__png_bytes" in pack.files:
                data, ends = pack[f"{model}__png_bytes"].tobytes(), pack[f"{model}__png_ends"]
                starts = np.concatenate([[0], ends[:-1]])
                pngs = tuple(data[s:e] for s, e in zip(starts, ends))
            out[model] = workload_from(model, pngs, pack[f"{model}__canonical"],
                                       tuple(str(x) for x in pack[f"{model}__true_labels"]))
    return out


def write_pack(path: Path, works: dict[str, Workload], png_models=tuple(SERVING)) -> None:
    """Every model's canonical images, true labels and sha256; PNGs for `png_models` (sent: lenet5 in
    part 3, every model in part 4)."""
    arrays = {}
    for model, work in works.items():
        arrays[f"{model}__canonical"] = work.canonical
        arrays[f"{model}__true_labels"] = np.asarray(work.true_labels, dtype=str)
        arrays[f"{model}__sha256"] = np.asarray(_sha(model))
        if model in png_models and work.pngs:
            arrays[f"{model}__png_bytes"] = np.frombuffer(b"".join(work.pngs), dtype=np.uint8)
            arrays[f"{model}__png_ends"] = np.cumsum([len(p) for p in work.pngs]).astype(np.int64)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(path).with_suffix(".tmp.npz")
    np.savez_compressed(temporary, **arrays)
    temporary.replace(path)


def limited(work: Workload, limit: int | None) -> Workload:
    if limit is None:
        return work
    return dataclasses.replace(work, pngs=work.pngs[:limit], canonical=work.canonical[:limit],
                               model_labels=work.model_labels[:limit], true_labels=work.true_labels[:limit])


def load_workloads(models, limit: int | None, inputs: Path, log: Log) -> tuple[dict[str, Workload], dict[str, str]]:
    """({model: Workload}, {model: why it is missing}): from the pack when it holds the model, else
    from the data sets (then, all images read, the pack is written for the next machine)."""
    works: dict[str, Workload] = {}
    try:
        works = read_pack(inputs, models)
    except (OSError, ValueError, KeyError) as err:
        log(f"  {inputs} unreadable ({err}); reading the data sets")
    if works:
        log(f"  held-out images of {', '.join(works)} from {inputs}")
    missing: dict[str, str] = {}
    loaded = {}
    for model in models:
        if model in works:
            continue
        try:
            loaded[model] = Workload.load(model, limit, SERVING[model].torch_threads)
        except (OSError, ValueError, ImportError, KeyError) as err:  # DataSetMissing is a FileNotFoundError
            missing[model] = f"{type(err).__name__}: {err}"
            log(f"  {model}: no held-out images: {missing[model]}")
    works.update(loaded)
    if loaded and limit is None:  # a pack holds every image
        try:
            write_pack(inputs, works)
            log(f"  packed the held-out images of {', '.join(works)} into {inputs}")
        except OSError as err:
            log(f"  could not write {inputs}: {err}")
    return {m: limited(works[m], limit) for m in models if m in works}, missing


# ---- parts 1 and 2: in process ---------------------------------------------------------------
class _InlinedPredict:
    """ImageClassifierHandler.predict's three lines, used only where the handler cannot be imported
    (no TorchServe `ts` package); the results record that it was."""

    def __init__(self):
        self.model = self.device = None

    def predict(self, images: np.ndarray) -> np.ndarray:
        import torch
        with torch.inference_mode():
            batch = torch.from_numpy(images).unsqueeze(1).to(self.device)
            return self.model(batch).float().cpu().numpy()


def handler_on(model: str, device) -> tuple[object, str]:
    """(our handler with `model` on `device`, as TorchServe's initialize leaves it for predict, and
    what it is): the model loaded from artifacts/ and moved there (loadtest/stage_costs.py's way)."""
    try:
        from handlers.classifier_handler import ImageClassifierHandler
        handler, what = ImageClassifierHandler(), "handlers/classifier_handler.py ImageClassifierHandler.predict"
    except ImportError as err:
        handler, what = _InlinedPredict(), f"its predict inlined (the handler cannot be imported: {err})"
    handler.metadata = artifacts.manifest(model)
    handler.labels = handler.metadata.get("labels", [])
    handler.model = artifacts.scripted_model(model).to(device)
    if hasattr(handler, "use_device"):
        handler.use_device(device)  # as initialize does: TF32 off on CUDA
    else:
        handler.device = device
    return handler, what


def predict_all(handler, images: np.ndarray, batch: int = PARITY_BATCH) -> np.ndarray:
    return np.concatenate([handler.predict(images[i:i + batch]) for i in range(0, len(images), batch)])


@contextmanager
def tf32_off() -> Iterator[None]:
    """cuDNN's and cuBLAS's TF32 off for the block (PyTorch allows it for convolutions by default)."""
    import torch
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def parity(model: str, work: Workload, device) -> dict:
    """The handler's predict on the CPU and on `device`, batches of 16, every image of `work`."""
    import torch
    cpu, what = handler_on(model, torch.device("cpu"))
    dev, _ = handler_on(model, device)
    images = work.canonical
    p_cpu = predict_all(cpu, images)
    p_dev = predict_all(dev, images)
    out = {"images": int(len(images)), "batch": PARITY_BATCH, "predict": what,
           "max_abs_diff": float(np.abs(p_cpu - p_dev).max()),
           "top1_agree": int((p_cpu.argmax(1) == p_dev.argmax(1)).sum())}
    try:
        with tf32_off():
            p_strict = predict_all(dev, images)
        out["max_abs_diff_tf32_off"] = float(np.abs(p_cpu - p_strict).max())
    except Exception as err:  # noqa: BLE001 - a torch that refuses the legacy flags costs this column only
        out["tf32_off_error"] = f"{type(err).__name__}: {err}"
    out["pass"] = bool(out["max_abs_diff"] <= PARITY_TARGET)
    return out


def timed_rates(predict, canonical: np.ndarray, batch: int, repeats: int, min_s: float) -> list[float]:
    """images/s of `predict` on batches of `batch` real images, `repeats` runs of >= min_s each."""
    n = len(canonical)
    batches = [canonical[np.arange(i, i + batch) % n] for i in range(0, max(n, 4 * batch), batch)][:32]
    for b in batches[:3] * 2:  # TorchScript's profiling runs, cuDNN's first calls
        predict(b)
    rates = []
    for _ in range(repeats):
        calls, started = 0, time.perf_counter()
        while True:
            predict(batches[calls % len(batches)])
            calls += 1
            elapsed = time.perf_counter() - started
            if elapsed >= min_s and calls >= 3:
                break
        rates.append(calls * batch / elapsed)
    return rates


def in_process(work: Workload, device, repeats: int, min_s: float, log: Log) -> dict:
    """lenet5's predict at each batch size, the CPU (one torch thread, as served) and `device`."""
    import torch
    torch.set_num_threads(SERVING[work.model].torch_threads)
    out = {"model": work.model, "batches": list(BATCHES), "repeats": repeats, "min_s": min_s,
           "cpu_threads": torch.get_num_threads(), "cpu": {}, "device": {}}
    for side, dev in (("cpu", torch.device("cpu")), ("device", device)):
        handler, out["predict"] = handler_on(work.model, dev)
        for batch in BATCHES:
            rates = timed_rates(handler.predict, work.canonical, batch, repeats, min_s)
            out[side][str(batch)] = {"images_per_s": statistics.median(rates), "runs": [round(r, 1) for r in rates]}
            log(f"  {side:<6} batch {batch:<4} {statistics.median(rates):12,.0f} images/s")
    return out


# ---- part 3: served ---------------------------------------------------------------------------
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
        # lenet5's archive names its workers; the other two models idle with one each (the server's
        # default, from the CPUs, would start 13 of each per server on a 16-CPU machine)
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
        stopping = time.monotonic()
        # all at once: servers_running stops them one after the other, several seconds each
        with ThreadPoolExecutor(len(servers)) as pool:
            list(pool.map(lambda server: stop(server.run_dir, quiet=True), servers.values()))
    results["stop_s"] = round(time.monotonic() - stopping, 1)
    return results


# ---- the machine -------------------------------------------------------------------------------
def gpu_info(device) -> dict:
    """The GPU's name and memory, CUDA (torch's build), cuDNN, the driver; {} for the CPU."""
    import torch
    info: dict = {"torch_cuda": torch.version.cuda}
    if device.type != "cuda":
        return info
    try:
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    compute_capability=f"{props.major}.{props.minor}", gpu_count=torch.cuda.device_count(),
                    cudnn=torch.backends.cudnn.version())
    except Exception as err:  # noqa: BLE001 - informative only
        info["gpu_error"] = str(err)
    driver = nvidia_smi("--query-gpu=driver_version", "--format=csv,noheader")
    if driver:
        info["driver"] = driver[0]
    else:
        try:
            import ctypes
            version = ctypes.c_int()
            ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(version))
            info["driver"] = f"supports CUDA {version.value // 1000}.{version.value % 1000 // 10} (libcuda)"
        except (OSError, AttributeError):
            pass
    return info


# ---- BENCHMARKS-GPU.md --------------------------------------------------------------------------
def _f(x, spec: str = ",.0f") -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, spec)


def _devices(server: dict) -> str:
    """'cuda:0 x2 (frontend: 1 GPU)' from one server's reported devices, flagged when not as expected."""
    reported = server.get("devices", {}).get(MODEL, [])
    counts = Counter(reported)
    text = ", ".join(f"{d} x{n}" for d, n in counts.items()) or "not logged"
    if server.get("frontend_gpus") is not None:
        text += f" (frontend: {server['frontend_gpus']} GPU{'s' if server['frontend_gpus'] != 1 else ''})"
    if reported and any(d.split(":")[0] != server["expect"] for d in reported):
        text = f"**{text}; expected {server['expect']}**"
    return text


def render(results: dict) -> str:
    """BENCHMARKS-GPU.md from the results (any part may be missing or an error)."""
    rehearsal = results["rehearsal"]
    m, g = results["machine"], results["gpu"]
    dev = "CUDA stand-in (CPU)" if rehearsal else "CUDA"
    title = "# GPU benchmarks" + (f": {REHEARSAL}" if rehearsal else "")
    lines = [title, "",
             f"Written by `make bench-gpu` (loadtest/bench/gpu.py; this run's command below) on "
             f"{results.get('finished') or results['started']}; rewritten by each run. What each part measures and "
             "how: `loadtest/bench/gpu.py`; the CPU benchmark: BENCHMARKS.md.", ""]
    if rehearsal:
        lines += [f"**{REHEARSAL}**: `--cpu-rehearsal` ran the GPU benchmark's code with the CUDA device replaced "
                  "by the CPU and TorchServe's GPUs off in every server; every figure labelled "
                  f"\"{dev}\" ran on the CPU. It proves the program, not a GPU.", ""]
    if g.get("gpu"):
        gpu = (f"{g['gpu']} ({g.get('gpu_memory_gib')} GiB, compute capability {g.get('compute_capability')}), "
               f"CUDA {g.get('torch_cuda')} (torch's build), cuDNN {g.get('cudnn')}, driver {g.get('driver', '?')}")
    else:
        gpu = "none" + (" (rehearsal)" if rehearsal else "")
    lines += [
        f"- **GPU**: {gpu}",
        f"- **machine**: {m.get('cpu_model')}, {m.get('cpus')} CPUs, {m.get('memory_gib')} GiB; {m.get('platform')}; "
        f"Python {m.get('python')}, torch {m.get('torch')}, TorchServe {m.get('torchserve', 'not installed')}, "
        f"{m.get('java', 'no Java')}",
        f"- **run**: {results['started']} to {results.get('finished') or '(not finished)'}; "
        + (results.get("gpu_env") or ("TorchServe's GPUs off in every server" if rehearsal else "")),
        f"- **command**: `{results['command']}`",
        "",
    ]
    lines += _render_parity(results.get("parity", {}), dev) + _render_in_process(results.get("in_process"), dev)
    lines += _render_served(results.get("served"), dev, rehearsal)
    lines += pod_memory.render(results.get("pod_memory"), rehearsal)
    return "\n".join(lines) + "\n"


def _render_parity(parity: dict, dev: str) -> list[str]:
    lines = ["## 1. Parity: the handler's predict on the CPU and on the device", "",
             f"Every canonical held-out image, batches of {PARITY_BATCH}; probabilities compared element by element. "
             f"Target: max |p_cpu - p_cuda| <= 1e-5. \"As served\": the handler as a worker sets it up "
             "(`use_device`: TF32 off on CUDA); \"TF32 off\": cuDNN's and cuBLAS's TF32 switched off explicitly "
             "(equal to it since the handler does that; with PyTorch's default TF32 convolutions lenet5 was 2.0e-3 "
             "off).", "",
             "| model | images | max abs diff, as served | max abs diff, TF32 off | top-1 agreement | within 1e-5 |",
             "|---|---|---|---|---|---|"]
    ok, over = [], []
    for model, p in parity.items():
        if "error" in p:
            lines.append(f"| {model} | | not measured: {p['error'][:200]} | | | |")
            continue
        strict = _f(p.get("max_abs_diff_tf32_off"), ".2e") if "tf32_off_error" not in p else "n/a"
        lines.append(f"| {model} | {p['images']:,} | {p['max_abs_diff']:.2e} | {strict} | "
                     f"{p['top1_agree']:,} / {p['images']:,} | {'yes' if p['pass'] else '**no**'} |")
        (ok if p["pass"] else over).append((model, p))
    if ok or over:
        agree = sum(p["top1_agree"] for _, p in ok + over)
        total = sum(p["images"] for _, p in ok + over)
        if not over:
            worst = max(ok, key=lambda mp: mp[1]["max_abs_diff"])
            reading = (f"All {len(ok)} models are within 1e-5 on {dev} as served (largest "
                       f"{worst[1]['max_abs_diff']:.1e}, {worst[0]})")
        else:
            strict = [p.get("max_abs_diff_tf32_off") for _, p in over]
            fixed = all(s is not None and s <= PARITY_TARGET for s in strict)
            reading = ("Over 1e-5 as served: " +
                       ", ".join(f"{mo} {p['max_abs_diff']:.1e}" for mo, p in over) +
                       ("; with TF32 off all are within it, so TF32 is what moves them" if fixed else
                        "; still over with TF32 off"))
        lines += ["", f"Reading: {reading}; top-1 agrees on {agree:,} of {total:,} images."]
    return lines + [""]


def _render_in_process(ip: dict | None, dev: str) -> list[str]:
    lines = ["## 2. In process: lenet5's predict, images/s", ""]
    if not ip or "error" in ip:
        return lines + [f"Not measured: {(ip or {}).get('error', 'the run stopped before it')}", ""]
    lines += [f"Median of {ip['repeats']} runs of >= {ip['min_s']:g} s each; the CPU with {ip['cpu_threads']} "
              "torch thread (as served); the device's figure includes copying the batch in and the "
              "probabilities back (predict returns numpy, which synchronises).", "",
              f"| batch | CPU images/s | {dev} images/s | {dev} / CPU | {dev} ms per batch |", "|---|---|---|---|---|"]
    ratios = {}
    for batch in ip["batches"]:
        c = ip["cpu"].get(str(batch), {}).get("images_per_s")
        d = ip["device"].get(str(batch), {}).get("images_per_s")
        ratios[batch] = d / c if c and d else None
        lines.append(f"| {batch} | {_f(c)} | {_f(d)} | {_f(ratios[batch], '.2f')} | "
                     f"{_f(batch / d * 1000 if d else None, '.3f')} |")
    faster = [b for b in ip["batches"] if ratios[b] and ratios[b] > 1]
    top = ip["batches"][-1]
    reading = (f"{dev} is faster from batch {faster[0]} on" if faster else f"{dev} is not faster at any batch size")
    lines += ["", f"Reading: {reading}; at batch {top} it is {_f(ratios[top], '.2f')}x the CPU's one thread, "
              f"at batch {ip['batches'][0]} {_f(ratios[ip['batches'][0]], '.2f')}x."]
    return lines + [""]


def _render_served(sv: dict | None, dev: str, rehearsal: bool) -> list[str]:
    lines = ["## 3. Served: lenet5 on TorchServe, one held-out PNG per request", ""]
    if not sv or sv.get("status") == "running":
        return lines + ["Not measured: the run stopped before the servers' rounds ended.", ""]
    if "error" in sv:
        return lines + ["Not measured: the servers did not start or run:", "", "```", sv["error"][:4000], "```", ""]
    base = sv["baseline"]
    lines += [f"{len(sv['variants'])} servers started together (READY after {sv['start_s']:g} s), each with all three "
              f"models; {sv['rounds']} interleaved round(s) of {sv['duration_s']:g} s per cell after "
              f"{sv['warmup_s']:g} s warm-up; {sv['images']:,} held-out PNGs, every answer checked against the "
              "model's own top-1 on the CPU. Variants: b<batch>d<delay ms>w<workers>t<threads> "
              "(loadtest/bench/tuning.py); cpu: number_of_gpu=0; " +
              ("cuda: number_of_gpu=0 too in this rehearsal." if rehearsal else "cuda: number_of_gpu=1, every "
               "worker on the one GPU.") +
              f" Load average before {sv['load_average_before']}, after {sv['load_average_after']}.", "",
              "| variant | lenet5 workers ran on (their logs) | C | req/s (median) | rounds | vs CPU baseline | p50 ms "
              "| p99 ms | errors | frontend us/req | worker us/req |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label in sv["variants"]:
        where = _devices(sv["servers"][label])
        for c in sv["concurrency"]:
            cell, ref = sv["cells"][f"{label} C={c}"], sv["cells"][f"{base} C={c}"]
            ratio = cell["throughput"] / ref["throughput"] if ref["throughput"] else None
            rounds = " / ".join(f"{v:,.0f}" for v in cell["throughput_rounds"])
            lines.append(f"| {label} | {where} | {c} | {cell['throughput']:,.0f} | {rounds} | {_f(ratio, '.2f')} | "
                         f"{cell['p50_ms']:.1f} | {cell['p99_ms']:.1f} | {sum(cell['errors'].values())} | "
                         f"{_f(cell['frontend_cpu_us_per_req'])} | {_f(cell['worker_cpu_us_per_req'])} |")
    others = [label for label in sv["variants"] if label != base]
    lines += ["", f"Ratios of median req/s to the CPU baseline ({base}, as served today):", "",
              "| C | " + " | ".join(others) + " |", "|---|" + "---|" * len(others)]
    best = {}
    for c in sv["concurrency"]:
        ref = sv["cells"][f"{base} C={c}"]["throughput"]
        row = []
        for label in others:
            t = sv["cells"][f"{label} C={c}"]["throughput"]
            row.append(_f(t / ref if ref else None, ".2f"))
        lines.append(f"| {c} | " + " | ".join(row) + " |")
        best[c] = max(sv["variants"], key=lambda v: sv["cells"][f"{v} C={c}"]["throughput"])
    wrong = [label for label in sv["variants"]
             if any(d.split(":")[0] != sv["servers"][label]["expect"]
                    for d in sv["servers"][label].get("devices", {}).get(MODEL, []))]
    silent = [label for label in sv["variants"] if not sv["servers"][label].get("devices", {}).get(MODEL)]
    errors = sum(sum(cell["errors"].values()) for cell in sv["cells"].values())
    parts = []
    for c, label in best.items():
        ref = sv["cells"][f"{base} C={c}"]["throughput"]
        t = sv["cells"][f"{label} C={c}"]["throughput"]
        parts.append(f"C={c} {label} {t:,.0f} req/s ({_f(t / ref if ref else None, '.2f')}x)")
    checks = ("workers ran where configured" if not wrong and not silent else
              (f"workers NOT where configured: {', '.join(wrong)}" if wrong else "") +
              (f"; no device logged for {', '.join(silent)}" if silent else ""))
    lines += ["", f"Reading: fastest at each C: {'; '.join(parts)}; {checks}; {errors} errors in all."]
    return lines + [""]


# ---- the run -------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench.gpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-rehearsal", action="store_true",
                        help=f"{REHEARSAL}: the same run with the CUDA device replaced by the CPU and TorchServe's "
                             "GPUs off; writes into results/bench-gpu-rehearsal/")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds measured per served cell and round")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up before each served cell")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--limit", type=int, default=None, help="use only the first N held-out images of each model")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per batch size in process")
    parser.add_argument("--min-time", type=float, default=0.2, help="seconds per timed run in process")
    parser.add_argument("--cpu-variants", nargs="*", default=list(CPU_VARIANTS),
                        help="served with +cpu (number_of_gpu=0); the first is the baseline of the ratios")
    parser.add_argument("--cuda-variants", nargs="*", default=list(CUDA_VARIANTS),
                        help="served with number_of_gpu=1")
    parser.add_argument("--no-served", action="store_true", help="parts 1 and 2 only (no TorchServe)")
    parser.add_argument("--out", type=Path, default=None,
                        help="the markdown (default docs/BENCHMARKS-GPU.md; rehearsal: results/bench-gpu-rehearsal/)")
    parser.add_argument("--results", type=Path, default=None,
                        help="folder of the JSON (default results/bench-gpu/; rehearsal: results/bench-gpu-rehearsal/)")
    parser.add_argument("--inputs", type=Path, default=INPUTS, help="the packed held-out images (see above)")
    parser.add_argument("--build", type=Path, default=BUILD / "gpu", help="where the variants' model stores are built")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for one answer")
    parser.add_argument("--port-base", type=int, default=int(os.environ.get("BENCH_PORT_BASE") or DEFAULT_PORT_BASE),
                        help="server i on BASE + 10 i (env BENCH_PORT_BASE); 0: ports the OS says are free")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' run directories")
    parser.add_argument("--command", default=None, help="the command to record in the report")
    args = parser.parse_args(argv)
    if not args.cpu_variants:
        parser.error("--cpu-variants needs at least the baseline")
    folder = ROOT / "results" / ("bench-gpu-rehearsal" if args.cpu_rehearsal else "bench-gpu")
    args.results = args.results or folder
    args.out = args.out or (folder / "BENCHMARKS-GPU.md" if args.cpu_rehearsal else ROOT / "docs" / "BENCHMARKS-GPU.md")
    given = sys.argv[1:] if argv is None else argv
    args.command = args.command or "python -m loadtest.bench.gpu " + " ".join(shlex.quote(a) for a in given)
    return args


def estimate_s(args: argparse.Namespace, n_variants: int) -> float:
    """Seconds of the served rounds alone (warm-up of every target, then every cell)."""
    cells = n_variants * len(args.concurrency) * args.rounds
    return n_variants * 2 * args.warmup + cells * (args.duration + args.warmup)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    if not args.cpu_rehearsal and not torch.cuda.is_available():
        print("no CUDA device (torch.cuda.is_available() is False): make bench-gpu skipped "
              "(`python -m loadtest.bench.gpu --cpu-rehearsal` rehearses it on the CPU)")
        return 0
    tag = f"[{REHEARSAL}] " if args.cpu_rehearsal else ""
    t0 = time.monotonic()

    def log(line: str) -> None:
        print(f"{tag}{time.monotonic() - t0:6.1f}s {line}", flush=True)

    device = torch.device("cpu") if args.cpu_rehearsal else torch.device("cuda:0")
    try:
        variants = served_variants(args.cpu_variants, args.cuda_variants, args.cpu_rehearsal)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.results.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    json_path = args.results / f"bench-gpu-{stamp}.json"
    results: dict = {"rehearsal": args.cpu_rehearsal, "device": str(device), "command": args.command,
                     "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "finished": None,
                     "machine": machine(), "gpu": gpu_info(device), "parity": {}, "in_process": None, "served": None,
                     "pod_memory": None}

    notes = kept_notes(args.out)  # the hand-written notes below the marker stay

    def write() -> None:
        json_path.write_text(json.dumps(results, indent=1))
        args.out.write_text(render(results) + "\n" + KEEP_MARKER + "\n" + notes)

    log(f"GPU benchmark on {device}" + (f" ({results['gpu'].get('gpu')})" if results["gpu"].get("gpu") else "") +
        f"; served part: {len(variants)} servers, about {estimate_s(args, len(variants)):.0f} s of rounds "
        "after they start")
    if not args.cpu_rehearsal and not args.no_served:
        value, note = frontend_gpu_env(os.environ.get("CUDA_VISIBLE_DEVICES"),
                                       nvidia_smi("--query-gpu=index", "--format=csv") is not None)
        if value is not None:
            os.environ["CUDA_VISIBLE_DEVICES"] = value  # the servers inherit it (serving/server.py env())
        results["gpu_env"] = note
        log("  " + note)

    log("held-out images")
    works, missing = load_workloads(list(SERVING), args.limit, args.inputs, log)

    log(f"1. parity, the handler's predict on cpu and on {device}, batches of {PARITY_BATCH}")
    for model in SERVING:
        if model not in works:
            results["parity"][model] = {"error": missing.get(model, "no images")}
            continue
        try:
            results["parity"][model] = p = parity(model, works[model], device)
            log(f"  {model:<12} max |diff| {p['max_abs_diff']:.2e} (TF32 off "
                f"{_f(p.get('max_abs_diff_tf32_off'), '.2e')}), top-1 agrees {p['top1_agree']}/{p['images']}, "
                f"{'within' if p['pass'] else 'OVER'} 1e-5")
        except Exception as err:  # noqa: BLE001 - one model's failure is reported, the run goes on
            results["parity"][model] = {"error": f"{type(err).__name__}: {err}"}
            log(f"  {model}: {results['parity'][model]['error']}")

    log(f"2. in process, {MODEL}'s predict at batch {', '.join(map(str, BATCHES))}")
    if MODEL in works:
        try:
            results["in_process"] = in_process(works[MODEL], device, args.repeats, args.min_time, log)
        except Exception as err:  # noqa: BLE001 - reported in the table, the run goes on
            results["in_process"] = {"error": f"{type(err).__name__}: {err}"}
            log(f"  {results['in_process']['error']}")
    else:
        results["in_process"] = {"error": missing.get(MODEL, "no images")}
    if device.type == "cuda":
        torch.cuda.empty_cache()
    write()
    log(f"  wrote {args.out} and {json_path} (parts 1 and 2)")

    if args.no_served:
        results["served"] = {"error": "not run (--no-served)"}
    elif MODEL not in works:
        results["served"] = {"error": f"no held-out images of {MODEL}: {missing.get(MODEL)}"}
    else:
        log(f"3. served, {MODEL}: " + ", ".join(variants))
        results["served"] = {"status": "running"}

        def measured(served_results: dict) -> None:
            results["served"] = served_results
            results["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            write()
            log(f"  wrote {args.out} and {json_path}; stopping the servers")

        try:
            results["served"] = served(args, works[MODEL], variants, log, measured)
            for label, server in results["served"]["servers"].items():
                log(f"  {label:<16} {MODEL} workers on {', '.join(server['devices'].get(MODEL, [])) or '?'} "
                    f"(expected {server['expect']}; frontend GPUs {server['frontend_gpus']})")
        except SERVED_ERRORS as err:
            results["served"] = {"error": f"{type(err).__name__}: {err}"}
            print(f"{tag}error: the served part failed: {err}", file=sys.stderr, flush=True)
    log("4. the GPU pod's server: every model's workers as k8s/overlays/gpu sizes them, their host memory")
    if args.no_served:
        results["pod_memory"] = {"error": "not run (--no-served)"}
    else:
        try:
            port_base = args.port_base and args.port_base + PORT_STRIDE * len(variants)  # past part 3's servers
            results["pod_memory"] = pm = pod_memory.measure(works, 0 if args.cpu_rehearsal else 1, port_base, log)
            log(f"  {pm['total_pss_mib']:,.0f} MiB (PSS) of the pod's {pm['pod_memory_mib']:,} MiB limit, "
                f"{len(pm['memory']['workers'])} workers of median {pm['worker_pss_median_mib']:,.0f} MiB")
        except (*SERVED_ERRORS, TimeoutError) as err:
            results["pod_memory"] = {"error": f"{type(err).__name__}: {err}"}
            print(f"{tag}error: the pod memory part failed: {err}", file=sys.stderr, flush=True)
    results["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    write()
    text = render(results)
    print("\n## 1." + text.split("## 1.", 1)[1] if "## 1." in text else text)
    log(f"wrote {args.out} and {json_path}" + (f" ({REHEARSAL})" if args.cpu_rehearsal else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
