"""BENCHMARKS-GPU.md from `make bench-gpu`'s results: the machine, then one section per part (any part
may be missing or an error), each with its table and a line of reading."""
from __future__ import annotations

from collections import Counter

import numpy as np

from loadtest.bench import pod_memory
from loadtest.bench.gpu_in_process import PARITY_BATCH, PARITY_TARGET
from loadtest.bench.gpu_served import MODEL

REHEARSAL = "rehearsal (no GPU)"


def fmt(x, spec: str = ",.0f") -> str:
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
             "(equal to it, since the handler does that).", "",
             "| model | images | max abs diff, as served | max abs diff, TF32 off | top-1 agreement | within 1e-5 |",
             "|---|---|---|---|---|---|"]
    ok, over = [], []
    for model, p in parity.items():
        if "error" in p:
            lines.append(f"| {model} | | not measured: {p['error'][:200]} | | | |")
            continue
        strict = fmt(p.get("max_abs_diff_tf32_off"), ".2e") if "tf32_off_error" not in p else "n/a"
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
        lines.append(f"| {batch} | {fmt(c)} | {fmt(d)} | {fmt(ratios[batch], '.2f')} | "
                     f"{fmt(batch / d * 1000 if d else None, '.3f')} |")
    faster = [b for b in ip["batches"] if ratios[b] and ratios[b] > 1]
    top = ip["batches"][-1]
    reading = (f"{dev} is faster from batch {faster[0]} on" if faster else f"{dev} is not faster at any batch size")
    lines += ["", f"Reading: {reading}; at batch {top} it is {fmt(ratios[top], '.2f')}x the CPU's one thread, "
              f"at batch {ip['batches'][0]} {fmt(ratios[ip['batches'][0]], '.2f')}x."]
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
            lines.append(f"| {label} | {where} | {c} | {cell['throughput']:,.0f} | {rounds} | {fmt(ratio, '.2f')} | "
                         f"{cell['p50_ms']:.1f} | {cell['p99_ms']:.1f} | {sum(cell['errors'].values())} | "
                         f"{fmt(cell['frontend_cpu_us_per_req'])} | {fmt(cell['worker_cpu_us_per_req'])} |")
    others = [label for label in sv["variants"] if label != base]
    lines += ["", f"Ratios of median req/s to the CPU baseline ({base}, as served today):", "",
              "| C | " + " | ".join(others) + " |", "|---|" + "---|" * len(others)]
    best = {}
    for c in sv["concurrency"]:
        ref = sv["cells"][f"{base} C={c}"]["throughput"]
        row = []
        for label in others:
            t = sv["cells"][f"{label} C={c}"]["throughput"]
            row.append(fmt(t / ref if ref else None, ".2f"))
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
        parts.append(f"C={c} {label} {t:,.0f} req/s ({fmt(t / ref if ref else None, '.2f')}x)")
    checks = ("workers ran where configured" if not wrong and not silent else
              (f"workers NOT where configured: {', '.join(wrong)}" if wrong else "") +
              (f"; no device logged for {', '.join(silent)}" if silent else ""))
    lines += ["", f"Reading: fastest at each C: {'; '.join(parts)}; {checks}; {errors} errors in all."]
    return lines + [""]
