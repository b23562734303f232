"""`python -m loadtest.bench`: the options of the benchmark and the tuning sweep, and main."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
from pathlib import Path

import loadtest.bench
from export.archive import ArchiveError
from loadtest.archives import BUILD
from loadtest.bench.benchmark import run_bench
from loadtest.bench.floor import FLOOR_PYTHON
from loadtest.bench.report import render_markdown, write_outputs
from loadtest.bench.tuning import render_tune, run_tune
from serving.server import LaunchError
from settings.limits import LIMITS
from settings.model_serving import SERVING

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PORT_BASE = 38100
# a run's failures said in one line: no server, no archive or model, nothing listening, a bad tuning variant
RUN_ERRORS = (LaunchError, ArchiveError, OSError, ValueError)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options; --smoke shortens the run; args.command is what the report records."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench", description=loadtest.bench.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lenet5", choices=list(SERVING),
                        help="the model served (rows 7-9, the floor and the photos, only for lenet5)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per cell and round")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up before each cell")
    parser.add_argument("--server-warmup", type=float, default=10.0,
                        help="seconds each server is under load before the rounds (the frontend's JIT)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images-per-request", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N held-out images")
    parser.add_argument("--photos", type=int, default=256,
                        help="how many 640x480 JPEG phone photos of held-out digits rows 8-9 send (seeded)")
    parser.add_argument("--floor-python", type=Path, default=FLOOR_PYTHON,
                        help="the interpreter of the floor's virtualenv (make floor-venv)")
    parser.add_argument("--floor-workers", type=int, default=0,
                        help="uvicorn worker processes of the floor (0: one per core this process may use)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for one answer")
    parser.add_argument("--port-base", type=int, default=int(os.environ.get("BENCH_PORT_BASE") or DEFAULT_PORT_BASE),
                        help="servers on BASE..BASE+2, +10, +20, +30 and the floor on +40 (env BENCH_PORT_BASE); "
                             "0: ports the OS says are free")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "BENCHMARKS.md")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "benchmarks.png")
    parser.add_argument("--results", type=Path, default=ROOT / "results" / "bench")
    parser.add_argument("--build", type=Path, default=BUILD)
    parser.add_argument("--command", default=None, help="the command to record in the report")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' run directories")
    parser.add_argument("--logging", choices=("container", "torchserve"), default="container",
                        help="TorchServe's logging in the servers: the production container's docker/log4j2.xml "
                             "(default) or TorchServe's own log4j2.xml")
    parser.add_argument("--tune", nargs="+", metavar="VARIANT", default=None,
                        help="instead of the rows: a tuning sweep of our handler under these settings, "
                             "e.g. handler b32d5w1t1 b16d2w1t1 b16d5w2t1 handler+tslog noop: handler (alias ours) "
                             "is our production handler as served, noop the no-op handler, b<batch>d<delay ms>"
                             "w<workers>t<threads> our handler under those settings, each optionally +async "
                             "and/or +tslog (see loadtest/bench/tuning.py); prints a table and writes "
                             "results/bench/tune-<date>.json, not BENCHMARKS.md")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds-long run (CI): 1 round of 0.5 s per cell, 64 images, 8 per request, 8 photos")
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.warmup, args.rounds = min(args.duration, 0.5), min(args.warmup, 0.2), 1
        args.server_warmup = min(args.server_warmup, 0.4)
        args.limit = args.limit or 64
        args.images_per_request = min(args.images_per_request, 8)
        args.photos = min(args.photos, 8)
    if args.photos < 1:
        parser.error("--photos must be at least 1")
    if not 1 <= args.images_per_request <= LIMITS.max_images_per_request:
        parser.error(f"--images-per-request must be 1..{LIMITS.max_images_per_request} "
                     "(InputLimits.max_images_per_request in settings/limits.py)")
    given = sys.argv[1:] if argv is None else argv
    args.command = args.command or "python -m loadtest.bench " + " ".join(shlex.quote(a) for a in given)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or the sweep), write its outputs, print its summary; 1 on a run error."""
    args = parse_args(argv)
    args.results.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        results = run_tune(args) if args.tune else run_bench(args)
    except RUN_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if args.tune:
        tune_json = args.results / f"tune-{stamp}.json"
        tune_json.write_text(json.dumps(results, indent=1))
        print("\n" + render_tune(results) + f"\nwrote {tune_json}")
        return 0
    results_dir = args.results / stamp
    write_outputs(results, args.out, args.plot, results_dir)
    print(f"\nwrote {args.out}, {args.plot} and {results_dir}/bench.json\n")
    print(render_markdown(results, None, "").split("## Where")[0].split("## Results", 1)[1].strip())
    return 0
