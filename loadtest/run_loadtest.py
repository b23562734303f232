"""`make loadtest`: run the Locust scenario headless, then print and plot what it measured.

    python -m loadtest.run_loadtest [--host http://127.0.0.1:8080] [--users 16] [--spawn-rate 4]
                                    [--run-time 30s] [--results results/loadtest/<date>]

Works against any server that speaks our API: the local one (`make serve`; the default host is
127.0.0.1 on INFERENCE_PORT from settings/ports.py) or a deployed Service
(`make loadtest HOST=http://tinyserve.example:8080`). Writes into the results folder:
locust_stats.csv, locust_stats_history.csv, locust_failures.csv, locust_exceptions.csv (Locust's
CSV), report.html (Locust's HTML report), loadtest.png (latency percentiles and throughput over
time) and summary.json. Prints throughput, p50/p95/p99 latency and the error rate, split into
transport/contract errors and wrong answers, the latter beside each model's held-out error rate.

Exit status 1 when any request failed for another reason than a wrong top-1 label, or when a
model answered wrong clearly more often than its held-out error rate says it should.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from settings.ports import HOST, Ports

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
PREFIX = "locust"
SUMMARY = "locust_final.json"  # written by the locustfile at exit (Locust's CSV may lag a second)
WRONG_LABEL = "wrong top-1 label"


class LoadTestError(RuntimeError):
    """The load test could not run; the message says why and what to do."""


def parse_duration(text: str) -> float:
    """Locust's run-time syntax (30s, 2m, 1h30m, 45) in seconds.

    Not locust.util.timespan.parse_timespan: importing anything from locust runs locust/__init__.py,
    which gevent-monkey-patches the importing process (this runner, and pytest, which imports
    this function). Locust parses --run-time again itself when it starts."""
    total, number = 0.0, ""
    units = {"h": 3600, "m": 60, "s": 1}
    for ch in text.strip():
        if ch.isdigit() or ch == ".":
            number += ch
        elif ch in units and number:
            total += float(number) * units[ch]
            number = ""
        else:
            raise ValueError(f"run time {text!r}: expected e.g. 30s, 2m or 1h30m")
    if number:
        total += float(number)
    if total <= 0:
        raise ValueError(f"run time {text!r} must be positive")
    return total


def check_reachable(host: str, timeout: float = 5.0) -> None:
    url = host.rstrip("/") + "/ping"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            raise LoadTestError(f"{url} answered {err.code}: the server wants a token. This load test "
                                "sends none; run it against a server with token auth off.") from None
        raise LoadTestError(f"{url} answered HTTP {err.code}; is it a TorchServe inference address?") from None
    except (urllib.error.URLError, OSError) as err:
        raise LoadTestError(f"no server answers at {url} ({getattr(err, 'reason', err)}). Start one with "
                            "`make serve`, or point the load test at one: "
                            "make loadtest HOST=http://host:port") from None


def run_locust(args, out: Path) -> int:
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--users", str(args.users), "--spawn-rate", str(args.spawn_rate), "--run-time", args.run_time,
        "--host", args.host, "--csv", str(out / PREFIX), "--html", str(out / "report.html"),
        "--only-summary", "--stop-timeout", "5", "--loglevel", "WARNING",
    ]
    limit = parse_duration(args.run_time) + 180  # start-up (reading the data sets) and shut-down
    env = dict(os.environ)
    env["LOADTEST_SUMMARY_FILE"] = str(out / SUMMARY)
    env["PYTHONPATH"] = str(ROOT) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    print("$ " + " ".join(command[2:]), flush=True)
    try:
        return subprocess.run(command, cwd=ROOT, env=env, timeout=limit).returncode
    except subprocess.TimeoutExpired:
        raise LoadTestError(f"Locust did not finish within {limit:.0f} s; see {out}") from None


def read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def number(value, default=float("nan")) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def expected_error_rates() -> dict[str, float]:
    from export.artifacts import ARTIFACTS
    rates = {}
    for path in ARTIFACTS.glob("*/metrics.json"):
        try:
            accuracy = json.loads(path.read_text())["heldout_accuracy"]
        except (OSError, ValueError, KeyError):
            continue
        rates[path.parent.name] = 1.0 - float(accuracy)
    return rates


def images_in(name: str) -> int:
    """Images per request of a Locust entry: "lenet5 png" 1, "lenet5 json x8" 8."""
    last = name.split()[-1]
    return int(last[1:]) if last.startswith("x") and last[1:].isdigit() else 1


def summarise(out: Path) -> dict:
    path = out / SUMMARY
    try:
        final = json.loads(path.read_text())
    except (OSError, ValueError):
        raise LoadTestError(f"Locust wrote no final statistics ({path}); see its output above") from None
    expected = expected_error_rates()
    per_model: dict[str, dict] = {}
    for name, entry in final["entries"].items():
        model, images = name.split()[0], images_in(name)
        row = per_model.setdefault(model, {"requests": 0, "wrong": 0, "errors": 0, "expected_wrong": 0.0})
        row["requests"] += entry["requests"]
        p = expected.get(model)
        if p is not None:  # a request is wrong when any of its images is: 1 - (1 - p)^images
            row["expected_wrong"] += entry["requests"] * (1 - (1 - p) ** images)
    kinds: dict[str, int] = {}
    for error in final["errors"]:
        model = error["name"].split()[0] if error["name"] else "?"
        row = per_model.setdefault(model, {"requests": 0, "wrong": 0, "errors": 0, "expected_wrong": 0.0})
        if WRONG_LABEL in error["error"]:
            row["wrong"] += error["occurrences"]
        else:
            row["errors"] += error["occurrences"]
            kinds[error["error"]] = kinds.get(error["error"], 0) + error["occurrences"]
    for model, row in per_model.items():
        n = max(row["requests"], 1)
        row["wrong_rate"] = row["wrong"] / n
        p = row.pop("expected_wrong") / n if model in expected else None
        row["expected_wrong_rate"] = p
        # allowed: the held-out error plus 4 standard errors of a sample of this size, plus 1 point
        row["wrong_rate_bound"] = None if p is None else p + 4 * math.sqrt(max(p * (1 - p), 1e-4) / n) + 0.01
    requests = final["requests"]
    return {
        "requests": requests, "failures": final["failures"],
        "error_rate": final["failures"] / requests if requests else 0.0,
        "transport_or_contract_errors": sum(kinds.values()), "error_kinds": kinds,
        "wrong_answers": sum(e["wrong"] for e in per_model.values()),
        "rps": final["rps"], "p50_ms": final["p50_ms"], "p95_ms": final["p95_ms"], "p99_ms": final["p99_ms"],
        "mean_ms": final["mean_ms"], "max_ms": final["max_ms"],
        "per_model": per_model,
    }


def plot_history(out: Path, title: str) -> Path | None:
    history = [r for r in read_csv(out / f"{PREFIX}_stats_history.csv") if r.get("Name") == "Aggregated"]
    if not history:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t0 = number(history[0]["Timestamp"], 0.0)
    t = [number(r["Timestamp"], 0.0) - t0 for r in history]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True)
    for q in ("50%", "95%", "99%"):
        top.plot(t, [number(r.get(q)) for r in history], label=f"p{q[:-1]}")
    top.set_ylabel("latency (ms)")
    top.set_title("latency percentiles (Locust's rolling window)")
    top.legend()
    bottom.plot(t, [number(r["Requests/s"], 0.0) for r in history], label="requests/s")
    bottom.plot(t, [number(r["Failures/s"], 0.0) for r in history], label="failures/s (incl. wrong answers)")
    users = bottom.twinx()
    users.plot(t, [number(r["User Count"], 0.0) for r in history], color="grey", linestyle=":", label="users")
    users.set_ylabel("users")
    bottom.set_ylabel("per second")
    bottom.set_xlabel("seconds since start")
    bottom.set_title("throughput")
    bottom.legend(loc="upper left")
    for axis in (top, bottom):
        axis.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = out / "loadtest.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def report(summary: dict) -> tuple[str, bool]:
    ok = summary["transport_or_contract_errors"] == 0 and summary["requests"] > 0
    lines = [
        f"requests     {summary['requests']:,}  ({summary['rps']:.1f} req/s)",
        f"latency      p50 {summary['p50_ms']:.0f} ms   p95 {summary['p95_ms']:.0f} ms   p99 {summary['p99_ms']:.0f} ms"
        f"   (mean {summary['mean_ms']:.1f} ms; Locust rounds percentiles)",
        f"failures     {summary['failures']:,} ({summary['error_rate']:.2%}): "
        f"{summary['transport_or_contract_errors']:,} transport/contract errors, "
        f"{summary['wrong_answers']:,} wrong answers",
    ]
    for kind, count in sorted(summary["error_kinds"].items(), key=lambda kv: -kv[1]):
        lines.append(f"             {count:,} x {kind}")
    for model, entry in sorted(summary["per_model"].items()):
        expected = entry["expected_wrong_rate"]
        verdict = ""
        if entry["wrong_rate_bound"] is not None and entry["wrong_rate"] > entry["wrong_rate_bound"]:
            verdict, ok = "  <- worse than held-out accuracy allows", False
        lines.append(f"  {model:<12} {entry['requests']:>7,} requests, wrong {entry['wrong_rate']:6.2%}"
                     + (f" (expected from held-out accuracy {expected:.2%})" if expected is not None else "") + verdict)
    return "\n".join(lines), ok


def main(argv=None) -> int:
    ports = Ports.from_env()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=f"http://{HOST}:{ports.inference}", help="the inference address")
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--spawn-rate", type=float, default=4.0, help="users started per second")
    parser.add_argument("--run-time", default="30s", help="e.g. 30s, 2m")
    parser.add_argument("--results", type=Path, default=None, help="default results/loadtest/<date-time>")
    args = parser.parse_args(argv)
    try:
        parse_duration(args.run_time)
        if args.users < 1 or args.spawn_rate <= 0:
            raise ValueError("--users must be >= 1 and --spawn-rate > 0")
    except ValueError as err:
        parser.error(str(err))
    out = args.results or ROOT / "results" / "loadtest" / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    try:
        check_reachable(args.host)
        code = run_locust(args, out)
        summary = summarise(out)
    except LoadTestError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    summary.update({"host": args.host, "users": args.users, "spawn_rate": args.spawn_rate,
                    "run_time": args.run_time, "locust_exit_code": code,
                    "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    plot = plot_history(out, f"{args.host}: {args.users} users, {args.run_time}, {summary['date']}")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    text, ok = report(summary)
    print(f"\nload test of {args.host}: {args.users} users, {args.run_time}\n{text}")
    print(f"\nwrote {out}/: {PREFIX}_*.csv, report.html" + (", loadtest.png" if plot else "") + ", summary.json")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
