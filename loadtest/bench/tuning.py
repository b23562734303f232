"""`make bench-tune`: our handler (or the no-op) under several settings side by side, one image per
request, through the same round loop as the benchmark; a table, and tune-<date>.json."""
from __future__ import annotations

import argparse
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from loadtest import client
from loadtest.bench.measure import ServerTarget, load_average, machine
from loadtest.bench.rounds import Entry, Schedule, run_rounds
from loadtest.bench.servers import server_extra, servers_running, store_for
from loadtest.bench.workload import HANDLER, NOOP, Workload, checker
from settings.model_serving import SERVING, ModelServing

ALIASES = {"ours": HANDLER}  # the old name of the production handler variant; old commands keep working
VARIANT = re.compile(r"^(?:(?P<base>noop|handler|ours)|b(?P<b>\d+)d(?P<d>\d+)w(?P<w>\d+)t(?P<t>\d+))"
                     r"(?P<flags>(\+(async|tslog|cpu|upstream))*)$")


@dataclass(frozen=True)
class Variant:
    """One tuning variant: its name in the table, its server variant, settings and config lines."""
    name: str                      # as given, "ours" spelled "handler"
    server: str                    # "handler", "noop" or "tune-b<batch>d<delay>w<workers>t<threads>"
    serving: ModelServing | None   # None: the variant's own (handler: as served; noop: the same)
    extra: dict[str, str]          # config.properties lines beyond the local profile


def parse_variant(spec: str, model: str) -> Variant:
    """"handler" (alias "ours"), "noop" or "b16d5w1t1" (batch, delay ms, workers, torch threads),
    with optional "+async" (async_logging=true), "+tslog" (TorchServe's own log4j2.xml instead
    of the container's), "+cpu" (number_of_gpu=0: the workers stay on the CPU even where TorchServe
    sees a GPU; loadtest/bench/gpu.py's CPU baseline) and "+upstream" (TorchServe's own batcher, which
    waits maxBatchDelay, instead of ours: serving/batcher.py); ValueError says the grammar."""
    match = VARIANT.match(spec)
    if not match:
        raise ValueError(f"tuning variant {spec!r}: expected handler, noop or b<batch>d<delay>w<workers>t<threads>, "
                         "optionally followed by +async, +tslog, +cpu and/or +upstream (e.g. b32d5w1t1+tslog)")
    extra = server_extra("torchserve" if "+tslog" in match["flags"] else "container",
                         batcher="+upstream" not in match["flags"])
    if "+async" in match["flags"]:
        extra["async_logging"] = "true"
    if "+cpu" in match["flags"]:
        extra["number_of_gpu"] = "0"  # TorchServe assigns no GPU to any worker
    if match["base"]:
        base = ALIASES.get(match["base"], match["base"])
        return Variant(base + match["flags"], base, None, extra)
    serving = ModelServing(batch_size=int(match["b"]), max_batch_delay_ms=int(match["d"]),
                           workers=int(match["w"]), torch_threads=int(match["t"]),
                           response_timeout_s=SERVING[model].response_timeout_s)
    return Variant(spec, "tune-" + spec.split("+")[0], serving, extra)


def run_tune(args: argparse.Namespace, log: Callable[[str], None] = print) -> dict:
    """args.tune's variants of args.model (cli.py's options), rounds interleaved -> tune-<date>.json's results."""
    model = args.model
    variants = {v.name: v for v in (parse_variant(spec, model) for spec in args.tune)}
    work = Workload.load(model, args.limit, SERVING[model].torch_threads)
    runs = {name: (store_for(v.server, model, v.serving, build=Path(args.build) / "tune"), v.extra)
            for name, v in variants.items()}
    schedule = Schedule(tuple(args.concurrency), args.rounds, args.duration, args.warmup)
    load_before = load_average()
    with servers_running(runs, args.port_base, "tune-", args.keep_logs, log) as servers:
        entries = []
        for name, server in servers.items():
            host, port = client.split_url(server.inference_url)
            check = checker(model, "status" if variants[name].server == NOOP else "full")
            target = ServerTarget(server, work.single_requests(host, port), check, args.timeout)
            entries.append(Entry(name, f"{name:<22}", "req/s", target))
        cells = run_rounds(entries, schedule, log)
    return {"model": model, "variants": list(variants), "concurrency": list(args.concurrency),
            "rounds": args.rounds, "duration_s": args.duration, "load_average_before": load_before,
            "load_average_after": load_average(), "machine": machine(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": args.command,
            "cells": {f"{name} C={c}": cells[(name, c)].summary("req/s") for name in variants
                      for c in args.concurrency}}


def render_tune(results: dict) -> str:
    """The sweep as a markdown table, one line per variant and C, under a line saying how it ran."""
    lines = [f"Tuning sweep, {results['model']}, {results['date']}, {results['rounds']} interleaved round(s) of "
             f"{results['duration_s']:g} s per cell, load average before {results['load_average_before']} after "
             f"{results['load_average_after']}; `{results['command']}`", "",
             "| variant | C | req/s (median) | rounds | p50 ms | p99 ms | errors | frontend us/req | worker us/req "
             "| client us/req |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in results["variants"]:
        for c in results["concurrency"]:
            cell = results["cells"][f"{name} C={c}"]
            rounds = " / ".join(f"{v:,.0f}" for v in cell["throughput_rounds"])
            lines.append(f"| {name} | {c} | {cell['throughput']:,.0f} | {rounds} | "
                         f"{cell['p50_ms']:.1f} | {cell['p99_ms']:.1f} | {sum(cell['errors'].values())} | "
                         f"{cell['frontend_cpu_us_per_req']:,.0f} | {cell['worker_cpu_us_per_req']:,.0f} | "
                         f"{cell['client_cpu_us_per_req']:,.0f} |")
    return "\n".join(lines) + "\n"
