"""The benchmark: its servers (four TorchServe variants and the floor), its rows through the round
loop, and the results (bench.json)."""
from __future__ import annotations

import argparse
import datetime as dt
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

from loadtest import client
from loadtest.bench.floor import floor_running, floor_versions, floor_workers
from loadtest.bench.measure import ModelTarget, ProcessTreeCPU, ServerTarget, load_average, machine
from loadtest.bench.rounds import Entry, Schedule, run_rounds
from loadtest.bench.servers import PORT_STRIDE, server_extra, servers_running, store_for
from loadtest.bench.workload import BATCH1, FLOOR, HANDLER, NOOP, PROXIED, Photos, Workload, checker, rows_for
from serving.workers import configured_workers
from settings.model_serving import SERVING
from settings.ports import JOB_QUEUE_SIZE, Ports

CHECKS = {"model": None, "noop": "status", "handler": "full", "batch1": "full", "multi": "list",
          "proxied": "full", "floor": "full", "photos": "full", "floor_photos": "full"}  # row -> checker kind
PHOTO_ROWS = ("photos", "floor_photos")


def run_bench(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict:
    """The rows of args.model (cli.py's options) -> the results that bench.json and BENCHMARKS.md hold."""
    model = args.model
    serving = SERVING[model]
    workers = args.floor_workers or floor_workers()
    rows = rows_for(model, args.images_per_request, workers)
    floor = any(r.server == FLOOR for r in rows)
    log(f"bench: {model}, concurrency {args.concurrency}, {args.rounds} round(s) x {args.duration:g} s "
        f"per cell (+{args.warmup:g} s warm-up), load average {load_average()}")
    work = Workload.load(model, args.limit, serving.torch_threads)
    photos = None
    if any(r.key in PHOTO_ROWS for r in rows):
        log(f"  rendering {args.photos} JPEG phone photos of held-out digits (export/photos.py)")
        photos = Photos.render(work, args.photos)
    extra = server_extra(args.logging)
    server_workers = serving.workers or configured_workers()
    if getattr(args, "smoke", False):  # seconds long: one worker a model starts the four servers in half the time
        server_workers = 1
        extra = {**extra, "default_workers_per_model": "1"}
    variants = {v: (store_for(v, model, build=Path(args.build)), extra, v == PROXIED)
                for v in (NOOP, HANDLER, BATCH1, PROXIED)}
    schedule = Schedule(tuple(args.concurrency), args.rounds, args.duration, args.warmup, args.server_warmup)
    with ExitStack() as stack:
        servers = dict(stack.enter_context(servers_running(variants, args.port_base, "bench-", args.keep_logs, log)))
        if floor:  # after the TorchServe variants hold their ports; in the slot after theirs
            port = args.port_base + PORT_STRIDE * len(variants) if args.port_base else Ports.free().inference
            servers[FLOOR] = stack.enter_context(floor_running(port, Path(args.build) / "floor", workers,
                                                               args.floor_python, log=log))
        started = dt.datetime.now(dt.timezone.utc)
        load_before = load_average()
        entries = []
        for row in rows:
            if row.server is None:
                target = ModelTarget(work, serving.batch_size)
            else:
                server = servers[row.server]
                host, port = client.split_url(server.inference_url)
                if row.key == "multi":
                    requests = work.multi_requests(host, port, args.images_per_request)
                elif row.key in PHOTO_ROWS:
                    requests = photos.requests(host, port)
                else:
                    requests = work.single_requests(host, port)
                meter = ProcessTreeCPU(server.pid) if row.server == FLOOR else None
                target = ServerTarget(server, requests, checker(model, CHECKS[row.key]), args.timeout, meter)
            entries.append(Entry(row.key, f"{row.title[:48]:<48}", row.unit, target))
        cells = run_rounds(entries, schedule, log)
    finished = dt.datetime.now(dt.timezone.utc)
    return {
        "model": model,
        "settings": {"batch_size": serving.batch_size, "max_batch_delay_ms": serving.max_batch_delay_ms,
                     "workers": server_workers, "torch_threads": serving.torch_threads,
                     "response_timeout_s": serving.response_timeout_s, "job_queue_size": JOB_QUEUE_SIZE},
        "logging": args.logging, "server_extra": extra,
        "concurrency": list(args.concurrency),
        "rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup,
        "server_warmup_s": args.server_warmup,
        "images_per_request": args.images_per_request, "images": len(work.pngs),
        "photos": photos.summary() if photos else None,
        "floor": {"workers": workers, "versions": floor_versions(args.floor_python)} if floor else None,
        "started": started.isoformat(timespec="seconds"), "finished": finished.isoformat(timespec="seconds"),
        "load_average_before": load_before, "load_average_after": load_average(),
        "machine": machine(),
        "command": args.command,
        "rows": [{"key": r.key, "title": r.title, "unit": r.unit,
                  "cells": {str(c): cells[(r.key, c)].summary(r.unit) for c in args.concurrency}} for r in rows],
    }
