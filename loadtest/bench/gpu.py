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
import shlex
import sys
import time
from pathlib import Path

from loadtest.archives import BUILD
from loadtest.bench import gpu_served, pod_memory
from loadtest.bench.gpu_in_process import BATCHES, PARITY_BATCH, gpu_info, in_process, nvidia_smi, parity
from loadtest.bench.gpu_inputs import INPUTS, load_workloads
from loadtest.bench.gpu_report import REHEARSAL, fmt, render
from loadtest.bench.gpu_served import (
    CPU_VARIANTS,
    CUDA_VARIANTS,
    MODEL,
    SERVED_ERRORS,
    frontend_gpu_env,
    served,
    served_variants,
)
from loadtest.bench.measure import machine
from loadtest.bench.report import KEEP_MARKER, kept_notes
from loadtest.bench.servers import PORT_STRIDE
from serving.server import LaunchError
from settings.model_serving import SERVING

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PORT_BASE = 38100


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


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclasses.dataclass
class Run:
    """One run: its options, the device, the results each part fills in, and where they are written."""
    args: argparse.Namespace
    device: object
    results: dict
    json_path: Path
    notes: str      # the hand-written notes below the marker of the report being rewritten
    started: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def tag(self) -> str:
        return f"[{REHEARSAL}] " if self.args.cpu_rehearsal else ""

    def log(self, line: str) -> None:
        print(f"{self.tag}{time.monotonic() - self.started:6.1f}s {line}", flush=True)

    def failed(self, part: str, what: str, err: Exception) -> None:
        """A part that could not run: recorded in its table and said on stderr."""
        self.results[part] = {"error": f"{type(err).__name__}: {err}"}
        print(f"{self.tag}error: {what} failed: {err}", file=sys.stderr, flush=True)

    def write(self) -> None:
        self.json_path.write_text(json.dumps(self.results, indent=1))
        self.args.out.write_text(render(self.results) + "\n" + KEEP_MARKER + "\n" + self.notes)


def start(args: argparse.Namespace, device) -> Run:
    """The run's results skeleton and output paths (the report's hand-written notes read before any write)."""
    args.results.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    json_path = args.results / f"bench-gpu-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    results = {"rehearsal": args.cpu_rehearsal, "device": str(device), "command": args.command,
               "started": utc_now(), "finished": None, "machine": machine(), "gpu": gpu_info(device),
               "parity": {}, "in_process": None, "served": None, "pod_memory": None}
    return Run(args, device, results, json_path, kept_notes(args.out))


def show_servers_the_gpu(run: Run) -> None:
    """TorchServe's frontend counts GPUs itself: make sure it sees this process's cuda:0."""
    value, note = frontend_gpu_env(os.environ.get("CUDA_VISIBLE_DEVICES"),
                                   nvidia_smi("--query-gpu=index", "--format=csv") is not None)
    if value is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = value  # the servers inherit it (serving/server.py env())
    run.results["gpu_env"] = note
    run.log("  " + note)


def run_parity(run: Run, works: dict, missing: dict) -> None:
    run.log(f"1. parity, the handler's predict on cpu and on {run.device}, batches of {PARITY_BATCH}")
    for model in SERVING:
        if model not in works:
            run.results["parity"][model] = {"error": missing.get(model, "no images")}
            continue
        try:
            run.results["parity"][model] = p = parity(model, works[model], run.device)
            run.log(f"  {model:<12} max |diff| {p['max_abs_diff']:.2e} (TF32 off "
                    f"{fmt(p.get('max_abs_diff_tf32_off'), '.2e')}), top-1 agrees {p['top1_agree']}/{p['images']}, "
                    f"{'within' if p['pass'] else 'OVER'} 1e-5")
        except Exception as err:  # noqa: BLE001 - one model's failure is reported, the run goes on
            run.results["parity"][model] = {"error": f"{type(err).__name__}: {err}"}
            run.log(f"  {model}: {run.results['parity'][model]['error']}")


def run_in_process(run: Run, works: dict, missing: dict) -> None:
    run.log(f"2. in process, {MODEL}'s predict at batch {', '.join(map(str, BATCHES))}")
    if MODEL not in works:
        run.results["in_process"] = {"error": missing.get(MODEL, "no images")}
        return
    try:
        run.results["in_process"] = in_process(works[MODEL], run.device, run.args.repeats, run.args.min_time,
                                               run.log)
    except Exception as err:  # noqa: BLE001 - reported in the table, the run goes on
        run.results["in_process"] = {"error": f"{type(err).__name__}: {err}"}
        run.log(f"  {run.results['in_process']['error']}")


def run_served(run: Run, works: dict, missing: dict, variants: dict) -> None:
    if run.args.no_served:
        run.results["served"] = {"error": "not run (--no-served)"}
        return
    if MODEL not in works:
        run.results["served"] = {"error": f"no held-out images of {MODEL}: {missing.get(MODEL)}"}
        return
    run.log(f"3. served, {MODEL}: " + ", ".join(variants))
    run.results["served"] = {"status": "running"}

    def measured(served_results: dict) -> None:  # written before the servers stop
        run.results["served"] = served_results
        run.results["finished"] = utc_now()
        run.write()
        run.log(f"  wrote {run.args.out} and {run.json_path}; stopping the servers")

    try:
        run.results["served"] = served(run.args, works[MODEL], variants, run.log, measured)
    except SERVED_ERRORS as err:
        run.failed("served", "the served part", err)
        return
    for label, server in run.results["served"]["servers"].items():
        run.log(f"  {label:<16} {MODEL} workers on {', '.join(server['devices'].get(MODEL, [])) or '?'} "
                f"(expected {server['expect']}; frontend GPUs {server['frontend_gpus']})")


def run_pod_memory(run: Run, works: dict, variants: dict) -> None:
    run.log("4. the GPU pod's server: every model's workers as k8s/overlays/gpu sizes them, their host memory")
    if run.args.no_served:
        run.results["pod_memory"] = {"error": "not run (--no-served)"}
        return
    try:
        problems = gpu_served.served_preflight()  # what part 3's servers need, this one needs too
        if problems:
            raise LaunchError("; ".join(problems))
        port_base = run.args.port_base and run.args.port_base + PORT_STRIDE * len(variants)  # past part 3's
        run.results["pod_memory"] = pm = pod_memory.measure(works, 0 if run.args.cpu_rehearsal else 1, port_base,
                                                            run.log)
    except (*SERVED_ERRORS, TimeoutError) as err:
        run.failed("pod_memory", "the pod memory part", err)
        return
    run.log(f"  {pm['total_pss_mib']:,.0f} MiB (PSS) of the pod's {pm['pod_memory_mib']:,} MiB limit, "
            f"{len(pm['memory']['workers'])} workers of median {pm['worker_pss_median_mib']:,.0f} MiB")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch
    if not args.cpu_rehearsal and not torch.cuda.is_available():
        print("no CUDA device (torch.cuda.is_available() is False): make bench-gpu skipped "
              "(`python -m loadtest.bench.gpu --cpu-rehearsal` rehearses it on the CPU)")
        return 0
    device = torch.device("cpu") if args.cpu_rehearsal else torch.device("cuda:0")
    try:
        variants = served_variants(args.cpu_variants, args.cuda_variants, args.cpu_rehearsal)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    run = start(args, device)
    gpu = run.results["gpu"].get("gpu")
    run.log(f"GPU benchmark on {device}" + (f" ({gpu})" if gpu else "") + f"; served part: {len(variants)} "
            f"servers, about {estimate_s(args, len(variants)):.0f} s of rounds after they start")
    if not args.cpu_rehearsal and not args.no_served:
        show_servers_the_gpu(run)
    run.log("held-out images")
    works, missing = load_workloads(list(SERVING), args.limit, args.inputs, run.log)
    run_parity(run, works, missing)
    run_in_process(run, works, missing)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    run.write()
    run.log(f"  wrote {args.out} and {run.json_path} (parts 1 and 2)")
    run_served(run, works, missing, variants)
    run_pod_memory(run, works, variants)
    run.results["finished"] = utc_now()
    run.write()
    text = render(run.results)
    print("\n## 1." + text.split("## 1.", 1)[1] if "## 1." in text else text)
    run.log(f"wrote {args.out} and {run.json_path}" + (f" ({REHEARSAL})" if args.cpu_rehearsal else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
