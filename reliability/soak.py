"""Soak: steady load on a TorchServe of its own for minutes; requests, errors and the resident
memory of the frontend and of every worker at start (after warm-up) and at the end.

    python -m reliability.soak [--duration 600] [--warmup 180] [--rate 100] [--clients 8]
                               [--port-base 28080] [--run-dir build/soak] [--out results/soak.json]

`make soak` runs it (10 minutes), `make soak-smoke` for seconds. The load is a fixed rate spread
over every served model, a mix of raw PNG, multipart and JSON base64 requests, and 5% bad
requests (a corrupt image, a decompression bomb) that must get their 4xx; anything else that is
not the expected answer is an error. Memory is read after the warm-up and at the end, and every
10 s in between (the report's timeline). The warm-up is long so that the JVM's start-up growth
under load (heap sizing, compiled code) is not read as a leak; the timeline tells a rise that
levels off from steady growth. Exit 0 when there were no errors, no
worker was restarted and no process grew by more than --max-growth (10%); else 1. Traffic goes
to 127.0.0.1 only and stops after --duration.
"""
from __future__ import annotations

import argparse
import base64
import json
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests

from handlers import contract
from handlers.png import png_bytes
from model_defs.registry import get_spec
from reliability import probe
from reliability.hostile import png_bomb
from serving.server import LaunchError, Server, running
from settings.model_serving import SERVING
from settings.ports import Ports

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class SoakCase:
    model: str
    kwargs: dict
    status: int
    error: str | None = None   # the error code a bad request must get


def requests_mix(per_model: int = 16, seed: int = 0) -> list[SoakCase]:
    """Valid requests for every model in three transports, and 1 bad request in 20."""
    rng = np.random.default_rng(seed)
    mix: list[SoakCase] = []
    for model in SERVING:
        height, width = get_spec(model).input_size
        for i in range(per_model):
            image = (rng.random((height, width)) * 255).astype(np.uint8)
            png = png_bytes(image)
            transport = i % 3
            if transport == 0:
                kwargs = dict(data=png, headers={"Content-Type": "image/png"})
            elif transport == 1:
                kwargs = dict(files={"data": ("x.png", png, "image/png")})
            else:
                kwargs = dict(json={"image": base64.b64encode(png).decode()})
            mix.append(SoakCase(model, kwargs, 200))
    bad = [SoakCase("lenet5", dict(data=probe.digit_png()[:40], headers={"Content-Type": "image/png"}), 400,
                   "corrupt_image"),
           SoakCase("mnist_net", dict(data=png_bomb(9000, 9000), headers={"Content-Type": "image/png"}), 413,
                   "image_too_large")]
    count = max(1, len(mix) // 19)
    mix += [bad[i % len(bad)] for i in range(count)]
    order = rng.permutation(len(mix))
    return [mix[i] for i in order]


def check(request: SoakCase, response: requests.Response) -> str | None:
    """None when the answer is the expected one, else a short description of what was wrong."""
    if response.status_code != request.status:
        return f"{request.model}: {response.status_code} instead of {request.status}: {response.text[:120]!r}"
    try:
        body = response.json()
    except ValueError:
        return f"{request.model}: {response.status_code} without a JSON body"
    try:
        if request.status == 200:
            contract.check_prediction(body, get_spec(request.model).labels, request.model)
        elif contract.check_error(body, response.status_code) != request.error:
            return f"{request.model}: error {body.get('error')!r} instead of {request.error!r}"
    except contract.ContractError as err:
        return f"{request.model}: {err}"
    return None


class Load:
    """`clients` threads that together send `rate` requests a second until `stop()` or `until`."""

    def __init__(self, server: Server, mix: list[SoakCase], rate: float, clients: int, until: float):
        self.server, self.mix, self.until = server, mix, until
        self.interval = clients / rate
        self.counts: Counter = Counter()
        self.errors: Counter = Counter()
        self.latencies: list[float] = []
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def start(self):
        for thread in self.threads:
            thread.start()

    def stop(self):
        self.done.set()
        for thread in self.threads:
            thread.join(timeout=40)

    def _client(self, index: int):
        headers = self.server.auth("inference")
        next_at = time.monotonic() + index * self.interval / len(self.threads)
        i = index
        with requests.Session() as session:
            while not self.done.is_set() and time.monotonic() < self.until:
                delay = next_at - time.monotonic()
                if delay > 0:
                    self.done.wait(delay)
                next_at = max(next_at + self.interval, time.monotonic() - self.interval)
                request = self.mix[i % len(self.mix)]
                i += len(self.threads)
                kwargs = dict(request.kwargs)
                kwargs["headers"] = {**kwargs.get("headers", {}), **headers}
                started = time.monotonic()
                try:
                    response = session.post(f"{self.server.inference_url}/predictions/{request.model}",
                                            timeout=30, **kwargs)
                    problem = check(request, response)
                except requests.RequestException as err:
                    problem = f"{request.model}: {type(err).__name__}: {str(err)[:120]}"
                elapsed = time.monotonic() - started
                with self.lock:
                    self.counts["requests"] += 1
                    self.counts["expected 4xx" if request.status != 200 else "good"] += problem is None
                    self.latencies.append(elapsed)
                    if problem:
                        self.errors[problem] += 1


def log_bytes(server: Server) -> int:
    return sum(p.stat().st_size for p in server.log_dir.glob("*") if p.is_file())


def run(server: Server, duration: float, warmup: float, rate: float, clients: int,
        sample_every: float = 10.0) -> dict:
    """Soak a running server; returns the report (see `summary`)."""
    mix = requests_mix()
    started = time.monotonic()
    load = Load(server, mix, rate, clients, until=started + duration)
    timeline = []
    load.start()
    try:
        warmup = min(warmup, duration / 2)
        time.sleep(warmup)
        start_memory = probe.server_memory(server, SERVING)
        start_logs = log_bytes(server)
        timeline.append({"t": round(time.monotonic() - started, 1),
                         "rss": {k: v["rss"] for k, v in start_memory.items()}})
        while time.monotonic() < started + duration:
            time.sleep(min(sample_every, max(0.0, started + duration - time.monotonic())))
            memory = probe.server_memory(server, SERVING)
            timeline.append({"t": round(time.monotonic() - started, 1),
                             "rss": {k: v["rss"] for k, v in memory.items()}})
    finally:
        load.stop()
    end_memory = probe.server_memory(server, SERVING)
    latencies = np.array(load.latencies or [0.0])
    processes = {}
    for name, before in start_memory.items():
        after = end_memory.get(name, {"pid": None, "rss": 0})
        processes[name] = {"pid_start": before["pid"], "pid_end": after["pid"], "rss_start": before["rss"],
                           "rss_end": after["rss"],
                           "growth": (after["rss"] - before["rss"]) / before["rss"] if before["rss"] else None}
    half = [t for t in timeline if t["t"] >= (timeline[0]["t"] + timeline[-1]["t"]) / 2][:1] if timeline else []
    for name, process in processes.items():
        middle = half[0]["rss"].get(name) if half else None
        process["growth_last_half"] = (process["rss_end"] - middle) / middle if middle else None
    return {
        "duration_s": round(time.monotonic() - started, 1), "warmup_s": warmup, "rate": rate, "clients": clients,
        "requests": load.counts["requests"], "good": load.counts["good"], "expected_4xx": load.counts["expected 4xx"],
        "errors": sum(load.errors.values()), "error_kinds": dict(load.errors.most_common(10)),
        "achieved_rate": round(load.counts["requests"] / max(duration, 1e-9), 1),
        "latency_ms": {q: round(float(np.percentile(latencies, p)) * 1000, 1)
                       for q, p in (("p50", 50), ("p99", 99), ("max", 100))},
        "processes": processes,
        "restarted": sorted(n for n, p in processes.items() if p["pid_start"] != p["pid_end"]),
        "log_bytes": {"after_warmup": start_logs, "end": log_bytes(server)},
        "timeline": timeline,
    }


def verdict(report: dict, max_growth: float) -> list[str]:
    problems = []
    if report["errors"]:
        problems.append(f"{report['errors']} errors: {report['error_kinds']}")
    if report["restarted"]:
        problems.append(f"restarted during the soak: {', '.join(report['restarted'])}")
    for name, process in report["processes"].items():
        if process["growth"] is not None and process["growth"] > max_growth:
            problems.append(f"{name} grew {process['growth']:.1%} after warm-up (limit {max_growth:.0%})")
    if report["requests"] == 0:
        problems.append("no request was sent")
    return problems


def summary(report: dict) -> str:
    mb = 2**20
    lines = [f"soak: {report['duration_s']} s ({report['warmup_s']:.0f} s warm-up), {report['requests']} requests "
             f"at {report['achieved_rate']}/s (target {report['rate']}/s, {report['clients']} clients): "
             f"{report['good']} good, {report['expected_4xx']} expected 4xx, {report['errors']} errors; latency "
             f"p50 {report['latency_ms']['p50']} ms, p99 {report['latency_ms']['p99']} ms, "
             f"max {report['latency_ms']['max']} ms",
             f"{'process':<14} {'pid':>8} {'RSS after warm-up':>18} {'RSS at end':>12} {'growth':>8} {'last half':>10}"]
    for name, p in report["processes"].items():
        growth = "n/a" if p["growth"] is None else f"{p['growth']:+.1%}"
        late = "n/a" if p["growth_last_half"] is None else f"{p['growth_last_half']:+.1%}"
        pid = str(p["pid_end"]) if p["pid_start"] == p["pid_end"] else f"{p['pid_start']}->{p['pid_end']}"
        lines.append(f"{name:<14} {pid:>8} {p['rss_start'] / mb:>15.1f} MB {p['rss_end'] / mb:>9.1f} MB "
                     f"{growth:>8} {late:>10}")
    logs = report["log_bytes"]
    lines.append(f"TorchServe logs: {logs['after_warmup'] / mb:.1f} MB after warm-up, {logs['end'] / mb:.1f} MB at end")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    parser.add_argument("--warmup", type=float, default=180.0, help="seconds before the start reading of memory")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second, all models together")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--port-base", type=int, default=28080,
                        help="inference port; management +1, metrics +2; 0: ports the OS says are free")
    parser.add_argument("--run-dir", type=Path, default=REPO / "build" / "soak")
    parser.add_argument("--model-store", type=Path, default=REPO / "model_store")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "soak.json")
    parser.add_argument("--max-growth", type=float, default=0.10, help="largest resident memory growth allowed")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.rate <= 0 or args.clients <= 0:
        print("error: --duration, --rate and --clients must be positive", file=sys.stderr)
        return 2
    try:
        ports = Ports.at(args.port_base) if args.port_base else Ports.free()
        with running(run_dir=args.run_dir, model_store=args.model_store, ports=ports, timeout=180) as server:
            print(f"soaking {server.inference_url} for {args.duration:.0f} s at {args.rate:.0f} req/s ...", flush=True)
            report = run(server, args.duration, args.warmup, args.rate, args.clients)
    except (LaunchError, ValueError) as err:  # ValueError: --port-base is no port; run() raises neither
        print(f"error: the soak's server did not start: {err}", file=sys.stderr)
        return 1
    problems = verdict(report, args.max_growth)
    report["problems"] = problems
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(summary(report))
    print(f"report: {args.out}")
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
