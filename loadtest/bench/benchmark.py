"""The six-row benchmark: its servers, its rows through the round loop, and the results (bench.json)."""
from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from typing import Callable

from loadtest import client
from loadtest.bench.measure import ModelTarget, ServerTarget, load_average, machine
from loadtest.bench.rounds import Entry, Schedule, run_rounds
from loadtest.bench.servers import server_extra, servers_running, store_for
from loadtest.bench.workload import BATCH1, HANDLER, NOOP, PROXIED, Workload, checker, rows_for
from pipeline.model_config import SERVING
from serving.settings import JOB_QUEUE_SIZE

CHECKS = {"model": None, "noop": "status", "handler": "full", "batch1": "full", "multi": "list",
          "proxied": "full"}  # row -> checker kind


def run_bench(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict:
    """The six rows of args.model (cli.py's options) -> the results that bench.json and BENCHMARKS.md hold."""
    model = args.model
    serving = SERVING[model]
    rows = rows_for(model, args.images_per_request)
    log(f"bench: {model}, concurrency {args.concurrency}, {args.rounds} round(s) x {args.duration:g} s "
        f"per cell (+{args.warmup:g} s warm-up), load average {load_average()}")
    work = Workload.load(model, args.limit, serving.torch_threads)
    extra = server_extra(args.logging)
    variants = {v: (store_for(v, model, build=Path(args.build)), extra, v == PROXIED)
                for v in (NOOP, HANDLER, BATCH1, PROXIED)}
    schedule = Schedule(tuple(args.concurrency), args.rounds, args.duration, args.warmup)
    with servers_running(variants, args.port_base, "bench-", args.keep_logs, log) as servers:
        started = dt.datetime.now(dt.timezone.utc)
        load_before = load_average()
        entries = []
        for row in rows:
            if row.server is None:
                target = ModelTarget(work, serving.batch_size)
            else:
                server = servers[row.server]
                host, port = client.split_url(server.inference_url)
                requests = (work.multi_requests(host, port, args.images_per_request) if row.key == "multi"
                            else work.single_requests(host, port))
                target = ServerTarget(server, requests, checker(model, CHECKS[row.key]), args.timeout)
            entries.append(Entry(row.key, f"{row.title[:48]:<48}", row.unit, target))
        cells = run_rounds(entries, schedule, log)
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
        "command": args.command,
        "rows": [{"key": r.key, "title": r.title, "unit": r.unit,
                  "cells": {str(c): cells[(r.key, c)].summary(r.unit) for c in args.concurrency}} for r in rows],
    }
