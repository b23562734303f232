"""What a benchmark run is judged by and how it is shown: the targets (ratios within one run),
BENCHMARKS.md (rewritten above the marker line, the hand-written notes below it kept) and the plot."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

KEEP_MARKER = "<!-- notes below this line are written by hand; make bench keeps them -->"


# a lone client's p50 against the floor's: TorchServe's hops (Netty, the frontend's queue, the worker's
# socket) may cost this much over the FastAPI app a user would write instead
LONE_CLIENT_P50 = 1.2

def ratio(a: float, b: float) -> float:
    """a / b, NaN where b is 0 (a row that served nothing)."""
    return a / b if b else float("nan")


def targets(results: dict) -> list[dict]:
    """The targets of BENCHMARKS.md at the highest C (and p99 at C=16): [{target, value, bound, met, shown}]."""
    rows = {r["key"]: r for r in results["rows"]}
    conc = [str(c) for c in results["concurrency"]]
    top = str(max(results["concurrency"]))
    mid = "16" if "16" in conc else conc[len(conc) // 2]

    def tp(key, c):
        return rows[key]["cells"][c]["throughput"]

    out = [
        {"target": f"row 3 >= 0.85 x row 2 at C={top} (our handler costs little over the stack)",
         "value": ratio(tp("handler", top), tp("noop", top)), "bound": 0.85},
        {"target": f"row 3 >= 2 x row 4 at C={top} (batching earns its keep)",
         "value": ratio(tp("handler", top), tp("batch1", top)), "bound": 2.0},
        {"target": f"row 5 >= 4 x row 3 in images/s at C={mid} (several images per request, no base64)",
         "value": ratio(tp("multi", mid), tp("handler", mid)), "bound": 4.0},
    ]
    if "proxied" in rows:  # older bench.json files have no row 6
        out.append({"target": f"row 6 >= 0.9 x row 3 at C={top} (the proxy in front costs little)",
                    "value": ratio(tp("proxied", top), tp("handler", top)), "bound": 0.9})
    out += floor_targets(rows, conc)
    for t in out:
        t["met"] = bool(t["value"] <= t["bound"] if t.get("at_most") else t["value"] >= t["bound"])
        t["shown"] = f"{t['value']:.2f}"
    errors = sum(sum(cell["errors"].values()) for r in results["rows"] for cell in r["cells"].values())
    out.append({"target": "zero errors in every row", "value": errors, "bound": 0, "met": errors == 0,
                "shown": f"{errors} errors"})
    p99 = rows["handler"]["cells"][mid]["p99_ms"]
    out.append({"target": f"row 3 p99 at C={mid} under 100 ms", "value": p99, "bound": 100.0,
                "met": bool(p99 < 100.0), "shown": f"{p99:.1f} ms"})
    return out


def server_cpu_us(cell: dict) -> float:
    """A cell's server CPU per request in us: frontend + workers + proxy (the client's own excluded)."""
    return cell["frontend_cpu_us_per_req"] + cell["worker_cpu_us_per_req"] + cell.get("proxy_cpu_us_per_req", 0.0)


def floor_targets(rows: dict[str, dict], conc: list[str]) -> list[dict]:
    """The targets against the floor (row 7), ratios within the run: row 3 >= 1.5 x its req/s
    at C=16 and C=64; at C=1 row 3's p50 <= 1.5 x and its server CPU per request <= 2 x the floor's;
    the same throughput ratio on the JPEG photos (row 8 against row 9). [] for runs without the floor.

    Throughput is judged against the floor's best round, not its median: uvicorn's worker processes
    accept from one shared socket, and in some rounds one of them takes most of the client's
    keep-alive connections and serves them on one core, a slow round that its median would count."""
    out = []
    pairs = [("handler", "floor", "row 3", "row 7", "")]
    if "photos" in rows and "floor_photos" in rows:
        pairs.append(("photos", "floor_photos", "row 8", "row 9", ", JPEG photos"))
    for ours, floor, name, floor_name, what in pairs:
        if ours not in rows or floor not in rows:
            continue
        a, b = rows[ours]["cells"], rows[floor]["cells"]
        for c in (c for c in ("16", "64") if c in conc):
            best = max(b[c].get("throughput_rounds") or [b[c]["throughput"]])
            out.append({"target": f"{name} >= 1.5 x {floor_name}'s best round in req/s at C={c} (beat the floor{what})",
                        "value": ratio(a[c]["throughput"], best), "bound": 1.5})
        if "1" in conc and not what:
            out.append({"target": f"{name} p50 <= {LONE_CLIENT_P50} x {floor_name}'s at C=1 (a lone client waits "
                                  "little longer)",
                        "value": ratio(a["1"]["p50_ms"], b["1"]["p50_ms"]), "bound": LONE_CLIENT_P50, "at_most": True})
            out.append({"target": f"{name} server CPU per request <= 2 x {floor_name}'s at C=1",
                        "value": ratio(server_cpu_us(a["1"]), server_cpu_us(b["1"])), "bound": 2.0, "at_most": True})
    return out


def photo_lines(results: dict) -> list[str]:
    """The header line about rows 8-9's photos ([] for runs without them)."""
    photos = results.get("photos")
    if not photos:
        return []
    return [f"- **photos** (rows 8-9): {photos['count']} {photos['width']}x{photos['height']} JPEG phone photos of "
            f"held-out digits (export/photos.py, seed {photos['seed']}, {photos['mean_bytes'] / 1024:.0f} KB on "
            "average; ink on paper, uneven light, blur, sensor noise), one per request as image/jpeg"]


def floor_lines(results: dict) -> list[str]:
    """The header line about the floor (rows 7 and 9; [] for runs without it)."""
    floor = results.get("floor")
    if not floor:
        return []
    v = floor.get("versions") or {}
    return [f"- **floor** (rows 7 and 9): `loadtest/floor/app.py`, the FastAPI app anyone would write first, "
            f"with our decode, limits, canonicalize, `model.pt` and answer, one forward pass per request; "
            f"FastAPI {v.get('fastapi', '?')}, uvicorn {v.get('uvicorn', '?')} with its defaults, "
            f"{floor['workers']} worker processes (one per core this process may use), 1 torch thread each, "
            f"torch {v.get('torch', '?')}, Python {v.get('python', '?')} (build/floor-venv, "
            "loadtest/floor/requirements.txt)"]


def header_lines(results: dict) -> list[str]:
    """BENCHMARKS.md's title and what the run was: model, inputs, settings, servers, machine, command."""
    m = results["machine"]
    s = results["settings"]
    return [
        "# Benchmarks",
        "",
        f"Written by `make bench` ({results['finished']}); do not edit above the marker line at the end,",
        "the next run rewrites it. What the rows mean and how they are measured: `loadtest/bench/`;",
        "why the serving settings are what they are: one line per value in `settings/model_serving.py`.",
        "",
        f"- **model**: `{results['model']}`; {results['images']} real held-out images sent as PNG "
        f"(rows 2-4, 6{' and 7' if results.get('floor') else ''} one per request, row 5 "
        f"{results['images_per_request']} per request as one NumPy .npy array of their pixels)",
        *photo_lines(results),
        *floor_lines(results),
        f"- **settings** (settings/model_serving.py, job queue: settings/ports.py): batchSize {s['batch_size']}, "
        "our batcher in the frontend (serving/java/README.md: a batch is the jobs queued, it never waits; "
        f"maxBatchDelay {s['max_batch_delay_ms']} ms only for TorchServe's own), "
        f"{s['workers']} worker(s) per model (serving/workers.py, from the CPUs), {s['torch_threads']} torch "
        f"thread(s) per worker, job queue {s['job_queue_size']}",
        "- **servers**: " + ("the local profile of serving/config.py (127.0.0.1) with the production "
                             "container's JVM options and logging (docker/log4j2.xml: stdout only, no "
                             "per-request lines)" if results.get("logging", "container") == "container" else
                             "the local profile of serving/config.py (127.0.0.1) with TorchServe's own "
                             "log4j2.xml (log files, several lines per request)") + "; one server per "
                             "variant (row 6's behind nginx, serving/proxy.py), the other two models loaded but idle",
        f"- **machine**: {m.get('cpu_model', '?')}, {m.get('cpus')} CPUs, {m.get('memory_gib', '?')} GiB; "
        f"{m.get('platform')}; Python {m.get('python')}, torch {m.get('torch', '?')}, TorchServe "
        f"{m.get('torchserve', '?')}, {m.get('java', 'java ?')}",
        f"- **load average** (1/5/15 min) before {results['load_average_before']}, after "
        f"{results['load_average_after']}: other work on the machine shares its cores, compare rows as ratios",
        f"- **run**: {results['started']} to {results['finished']}, {results['rounds']} interleaved round(s) of "
        f"{results['duration_s']:g} s per cell after {results['warmup_s']:g} s warm-up, each server first "
        f"{results.get('server_warmup_s', 0):g} s under load (the frontend's JIT); "
        f"client and servers on the same machine",
        f"- **command**: `{results['command']}`",
    ]


def results_lines(results: dict) -> list[str]:
    """The rows at every C, then the targets."""
    lines = [
        "## Results",
        "",
        "Throughput is the median over rounds (req/s, or images/s where the unit says); latency",
        "percentiles pool every request of every round. C = requests in flight (closed loop; for",
        "row 1, the batch size of one forward pass is min(C, batchSize)).",
        "",
        "| row | unit | C | throughput | p50 ms | p95 ms | p99 ms | errors | rounds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        for c in map(str, results["concurrency"]):
            cell = row["cells"][c]
            errors = sum(cell["errors"].values())
            error_text = f"{errors} ({cell['error_rate']:.2%})" if errors else "0"
            if errors:
                error_text += ": " + ", ".join(f"{k} x{v}" for k, v in cell["errors"].items())
            lines.append(f"| {row['title']} | {row['unit']} | {c} | {cell['throughput']:,.0f} | "
                         f"{cell['p50_ms']:.2f} | {cell['p95_ms']:.2f} | {cell['p99_ms']:.2f} | {error_text} | "
                         f"{' / '.join(f'{v:,.0f}' for v in cell['throughput_rounds'])} |")
    lines += ["", "## Targets (ratios within this run)", "", "| target | measured | met |", "|---|---|---|"]
    for t in targets(results):
        lines.append(f"| {t['target']} | {t['shown']} | {'yes' if t['met'] else '**no**'} |")
    return lines


def cpu_lines(results: dict) -> list[str]:
    """The CPU per request of every process, per row and C (row 1, in process, has none)."""
    cpus = results["machine"].get("cpus")
    lines = [
        "## Where the CPU goes (per request, all rounds)",
        "",
        "CPU time of the TorchServe frontend (Java), its Python worker(s), nginx in front (row 6) and",
        "this client, divided by the requests sent (the floor, rows 7 and 9: uvicorn's master as the",
        f"frontend, its worker processes as the workers); on {cpus} cores they compete, so their",
        "sum bounds the throughput.",
        "",
        "| row | C | frontend us | worker us | proxy us | client us |",
        "|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        if row["key"] == "model":
            continue
        for c in map(str, results["concurrency"]):
            cell = row["cells"][c]
            lines.append(f"| {row['title']} | {c} | {cell['frontend_cpu_us_per_req']:,.0f} | "
                         f"{cell['worker_cpu_us_per_req']:,.0f} | {cell.get('proxy_cpu_us_per_req', 0):,.0f} | "
                         f"{cell['client_cpu_us_per_req']:,.0f} |")
    return lines


def render_markdown(results: dict, plot_name: str | None, kept: str) -> str:
    """BENCHMARKS.md: the run, the rows, the targets, the CPU per request, the plot (plot_name), then `kept`."""
    lines = [*header_lines(results), "", *results_lines(results), "", *cpu_lines(results)]
    if plot_name:
        lines += ["", f"![throughput and p99 latency per row]({plot_name})"]
    lines += ["", KEEP_MARKER, kept.rstrip("\n")]
    return "\n".join(lines).rstrip("\n") + "\n"


def plot(results: dict, path: Path) -> None:
    """Throughput and p99 latency per row over concurrency, as a PNG at `path`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    conc = results["concurrency"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for row in results["rows"]:
        label = f"{row['title']} ({row['unit']})"
        left.plot(conc, [row["cells"][str(c)]["throughput"] for c in conc], marker="o", label=label)
        if row["key"] != "model":
            right.plot(conc, [row["cells"][str(c)]["p99_ms"] for c in conc], marker="o", label=row["title"])
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xticks(conc, [str(c) for c in conc])
        axis.set_xlabel("concurrency (requests in flight)")
        axis.grid(True, alpha=0.3)
    left.set_yscale("log")
    left.set_ylabel("throughput (req/s or images/s, see legend)")
    right.set_ylabel("p99 latency (ms)")
    left.set_title("throughput")
    right.set_title("p99 latency")
    left.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{results['model']}: {results['started']} on {results['machine'].get('cpus')} CPUs "
                 f"({results['machine'].get('cpu_model', '')})", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def kept_notes(path: Path) -> str:
    """The hand-written notes below KEEP_MARKER in `path` ("" when there are none)."""
    if not path.is_file():
        return ""
    text = path.read_text()
    return text.split(KEEP_MARKER, 1)[1].lstrip("\n") if KEEP_MARKER in text else ""


def write_outputs(results: dict, out: Path, plot_path: Path, results_dir: Path) -> None:
    """results_dir/bench.json, the plot (copied into results_dir too) and `out` (BENCHMARKS.md)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "bench.json").write_text(json.dumps(results, indent=1))
    plot(results, plot_path)
    if plot_path.parent.resolve() != (results_dir.resolve()):
        shutil.copy2(plot_path, results_dir / plot_path.name)
    relative = os.path.relpath(plot_path.resolve(), out.resolve().parent)
    out.write_text(render_markdown(results, relative, kept_notes(out)))


