"""EVALUATION.md: the results against the targets, per model its figures and each set's expected
calibration error, the typed digits per font family, and the sets, with the machine, the command
and the models' provenance."""
from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path

import numpy as np

from evaluation import sets as eval_sets
from evaluation.client import Outcome
from evaluation.fonts import FAMILIES
from export import artifacts
from export.calibration import ECE_BINS
from settings.machine import cpu_model


def machine() -> str:
    return (f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}")


def model_provenance(model: str) -> str:
    manifest = artifacts.manifest(model)
    if not manifest:
        return f"`{model}`: no artifacts/{model}/manifest.json here (the server may serve other files)"
    exported = dt.datetime.fromtimestamp(artifacts.path(model, "manifest.json").stat().st_mtime)
    try:
        held = f", training's held-out accuracy {artifacts.metrics(model)['heldout_accuracy']:.2%}"
    except (KeyError, TypeError):
        held = ""
    return (f"`{model}`: model.pt sha256 {manifest.get('sha256', '?')[:12]}, trained on "
            f"{manifest.get('data_source', '?')}, exported {exported:%Y-%m-%d %H:%M}{held}")


def pct(x: float) -> str:
    return "n/a" if x != x else f"{x:.2%}"


def family_table(outcomes: list[Outcome], evalset: eval_sets.EvalSet) -> list[str]:
    models = [o.model for o in outcomes]
    category = {f.name: f.category for f in FAMILIES}
    groups = np.array(evalset.groups)
    lines = ["| font family | category | images | " + " | ".join(models) + " |",
             "|---|---|---:|" + "---:|" * len(models)]
    for name in dict.fromkeys(evalset.groups):
        mask = groups == name
        cells = [pct(float(np.mean(o.predicted[mask] == o.expected[mask]))) for o in outcomes]
        lines.append(f"| {name} | {category.get(name, '')} | {int(mask.sum())} | " + " | ".join(cells) + " |")
    lines += ["", "| category | images | " + " | ".join(models) + " |", "|---|---:|" + "---:|" * len(models)]
    cats = np.array([category.get(g, "") for g in evalset.groups])
    for cat in dict.fromkeys(cats):
        mask = cats == cat
        cells = [pct(float(np.mean(o.predicted[mask] == o.expected[mask]))) for o in outcomes]
        lines.append(f"| {cat} | {int(mask.sum())} | " + " | ".join(cells) + " |")
    return lines


def write_report(out: Path, figures: Path, outcomes: list[Outcome], sets_by_name: dict, url: str,
                 command: str, started: dt.datetime, seconds: float, seed: int, limit: int | None,
                 figure_files: dict) -> None:
    rel = lambda p: os.path.relpath(p, out.parent)  # noqa: E731
    models = list(dict.fromkeys(o.model for o in outcomes))
    lines = [
        "# Evaluation: the served models on what people send",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} (run took {seconds:.0f} s)",
        f"- Command: `{command}`",
        f"- Machine: {machine()}",
        f"- Server: {url} (each picture one POST of its bytes to /predictions/<model>)",
        f"- Sets: seed {seed}" + (f", at most {limit} pictures a set (a smoke run: not the measurement)"
                                  if limit else ", every picture"),
        "- Models in artifacts/ at the time:",
        *[f"  - {model_provenance(m)}" for m in models],
        "",
        "An answer that is not 200 counts as wrong. ECE: the expected calibration error of the answered",
        f"pictures' top probabilities over {ECE_BINS} equal-width bins (Guo et al. 2017; `export/calibration.py`).",
        "Regenerate with `make serve` then `make evaluate`",
        "(`evaluation/evaluate.py`); the sets are described in `evaluation/sets.py`.",
        "",
        "## Results against the targets",
        "",
        "| model | input | images | errors | accuracy | target | met | published |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    for o in outcomes:
        spec = eval_sets.SPECS[o.set_name]
        met = "**met**" if o.accuracy >= spec.targets[o.model] else "not met"
        extra = f" ({o.not_sent} not sent: time limit)" if o.not_sent else ""
        lines.append(f"| {o.model} | {spec.kind} | {o.sent}{extra} | {sum(o.errors.values())} | "
                     f"{pct(o.accuracy)} | {spec.targets[o.model]:.1%} | {met} | {spec.published.get(o.model, '')} |")
    errs = [(o, e, c) for o in outcomes for e, c in o.errors.items()]
    if errs:
        lines += ["", "Error answers: " + "; ".join(f"{o.model} on {o.set_name}: {c} x {e}" for o, e, c in errs)]
    for model in models:
        lines += ["", f"## {model}", ""]
        for o in (o for o in outcomes if o.model == model):
            lines.append(f"- {eval_sets.SPECS[o.set_name].kind}: {o.correct}/{o.sent} = {pct(o.accuracy)}, "
                         f"ECE {pct(o.reliability().ece)}, {o.seconds:.0f} s; "
                         f"[confusion matrix]({rel(figure_files[(o.set_name, model)])})")
        lines += ["", "Most confident mistakes, per set (picture sent | its canonical input as this checkout's",
                  "model_defs/preprocessing.py makes it; the served archive carries its own copy):", "",
                  f"![{model} mistakes]({rel(figure_files[('mistakes', model)])})",
                  "", "Reliability: accuracy against the answered label's probability, per set, and the share of",
                  "answers per bin:", "",
                  f"![{model} reliability]({rel(figure_files[('reliability', model)])})"]
    if "typed" in sets_by_name and any(o.set_name == "typed" for o in outcomes):
        lines += ["", "## Typed digits per font family", "",
                  "Font families and their Debian packages: `evaluation/fonts.py`.", ""]
        lines += family_table([o for o in outcomes if o.set_name == "typed"], sets_by_name["typed"])
    lines += ["", "## The sets", "", "| set | input | models | from |", "|---|---|---|---|"]
    for name in dict.fromkeys(o.set_name for o in outcomes):
        spec = eval_sets.SPECS[name]
        lines.append(f"| `{name}` | {spec.kind} | {', '.join(spec.models)} | {spec.source} |")
    lines += ["", "Phone photos (`export/photos.py`): 640x480 JPEG at quality 70-90, the digit's ink 140-260 px",
              "tall anywhere on the page, rotated within 10 degrees; paper colour and texture, brightness gradients,",
              "vignetting, soft shadows of varied direction and depth, specks, ink from black and blue ballpoint to",
              "pencil (never pure black), defocus or hand-shake blur, sensor noise. "
              "Typed digits (`evaluation/typed.py`):",
              "18-160 px fonts, regular/bold/italic faces, anywhere on pages of varied size, rotated within 6 degrees,",
              "dark ink on white or slightly tinted paper, JPEG at quality 70-95.", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
