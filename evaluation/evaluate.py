"""Send every evaluation set to a running TorchServe over HTTP and write EVALUATION.md.

    python -m evaluation.evaluate [--url http://127.0.0.1:8080] [--sets mnist_png,typed,...]
                                  [--limit N] [--workers 4] [--time-limit 1800]
                                  [--out docs/EVALUATION.md] [--figures docs/evaluation]
    python -m evaluation.evaluate --smoke      # 20 pictures a set, into results/evaluate-smoke/

Each picture is one POST of its bytes (PNG or JPEG, as a client sends it) to
/predictions/<model>, from a bounded thread pool, each request with a timeout and the whole run
within --time-limit (pictures not sent by then are reported as not sent). Only loopback servers
are accepted. Writes, per model and set, the accuracy (an error answer counts as wrong), a
confusion matrix PNG, and per model a picture of its most confident mistakes beside the canonical
image the model saw (model_defs.preprocessing.canonicalize on the decoded picture); the typed
digits are broken down per font family. Targets are printed and recorded as met / not met; the
exit status is 0 when the run completed (--strict: 1 when a target is not met).
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import ipaddress
import json
import os
import platform
import shlex
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import requests

from evaluation import sets as eval_sets
from evaluation.fonts import FAMILIES
from export import artifacts
from handlers import contract
from model_defs.registry import get_spec
from serving.machine import cpu_model
from settings.ports import HOST, Ports

SMOKE_LIMIT = 20
MISTAKES_PER_SET = 6


class ServerDown(RuntimeError):
    """Nothing answers at the URL."""


@dataclass
class Outcome:
    """One model on one set."""
    set_name: str
    model: str
    expected: np.ndarray                 # label index per picture
    predicted: np.ndarray                # -1 when not answered (error or not sent)
    confidence: np.ndarray               # the top probability (0 when not answered)
    errors: Counter = field(default_factory=Counter)
    not_sent: int = 0
    seconds: float = 0.0

    @property
    def sent(self) -> int:
        return len(self.expected) - self.not_sent

    @property
    def correct(self) -> int:
        return int(np.count_nonzero(self.predicted == self.expected))

    @property
    def accuracy(self) -> float:
        return self.correct / self.sent if self.sent else float("nan")


def default_url() -> str:
    return f"http://{HOST}:{Ports.from_env().inference}"


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"{url!r}: expected http://host:port")
    host = parts.hostname
    loopback = host == "localhost"
    if not loopback:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
    if not loopback:
        raise ValueError(f"{url!r}: this evaluation only talks to a server on this machine "
                         "(127.0.0.0/8, ::1, localhost)")
    return url.rstrip("/")


def check_server(url: str) -> None:
    try:
        requests.get(f"{url}/ping", timeout=5)
    except requests.RequestException as err:
        raise ServerDown(f"nothing answers at {url} ({type(err).__name__}): start it with `make serve`, "
                         f"then run this again") from None


class _Poster:
    """Thread-local keep-alive sessions."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.local = threading.local()

    def post(self, url: str, body: bytes, content_type: str, labels: tuple[str, ...]):
        """POST one picture -> ((index, probability of the label), None), or (None, what went wrong)."""
        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = requests.Session()
        try:
            response = session.post(url, data=body, headers={"Content-Type": content_type}, timeout=self.timeout)
        except requests.RequestException as err:
            return None, type(err).__name__
        if response.status_code != 200:
            try:
                code = response.json().get("error") or response.json().get("code")
            except ValueError:
                code = None
            return None, f"HTTP {response.status_code}" + (f" {code}" if code else "")
        try:
            answer = response.json()
            label = contract.check_prediction(answer, labels)
        except ValueError:  # not JSON, or a contract.ContractError
            return None, "bad answer"
        return (answer["index"], float(answer["probabilities"][label])), None


def run_model(url: str, model: str, evalset: eval_sets.EvalSet, workers: int, timeout: float,
              deadline: float, progress: bool = True) -> Outcome:
    """POST every picture of the set to the model; bounded by `workers` and the `deadline`."""
    n = len(evalset)
    expected = np.array([label for _, label in evalset.items], dtype=np.int64)
    predicted = np.full(n, -1, dtype=np.int64)
    confidence = np.zeros(n, dtype=np.float64)
    errors: Counter = Counter()
    sent = np.zeros(n, dtype=bool)
    poster = _Poster(timeout)
    endpoint = f"{url}/predictions/{model}"
    content_type = evalset.spec.content_type
    labels = get_spec(model).labels

    def one(i: int):
        if time.monotonic() >= deadline:
            return i, None, None
        sent[i] = True
        return (i, *poster.post(endpoint, evalset.items[i][0], content_type, labels))

    start = time.monotonic()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n, desc=f"{evalset.name} -> {model}", unit="img", leave=False)
    with ThreadPoolExecutor(workers) as pool:
        for future in as_completed([pool.submit(one, i) for i in range(n)]):
            i, answer, error = future.result()
            if answer is not None:
                predicted[i], confidence[i] = answer
            elif error is not None:
                errors[error] += 1
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return Outcome(evalset.name, model, expected, predicted, confidence, errors,
                   not_sent=int(n - sent.sum()), seconds=time.monotonic() - start)


# ---- figures -------------------------------------------------------------------------------------

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def confusion(outcome: Outcome, classes: int) -> np.ndarray:
    matrix = np.zeros((classes, classes + 1), dtype=np.int64)  # last column: no answer
    for true, pred in zip(outcome.expected, outcome.predicted):
        matrix[true, pred if pred >= 0 else classes] += 1
    return matrix


def plot_confusion(outcome: Outcome, path: Path) -> None:
    plt = _pyplot()
    labels = list(get_spec(outcome.model).labels)
    matrix = confusion(outcome, len(labels))
    if matrix[:, -1].sum() == 0:
        matrix = matrix[:, :-1]
        cols = labels
    else:
        cols = labels + ["no answer"]
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for r in range(matrix.shape[0]):
        for c in range(matrix.shape[1]):
            if matrix[r, c]:
                ax.text(c, r, str(matrix[r, c]), ha="center", va="center", fontsize=7,
                        color="white" if rates[r, c] > 0.5 else ("firebrick" if r != c else "black"))
    ax.set_xticks(range(len(cols)), cols, rotation=45 if len(max(cols, key=len)) > 2 else 0, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("answered")
    ax.set_ylabel("true")
    ax.set_title(f"{outcome.model} on {outcome.set_name}: {outcome.correct}/{outcome.sent} = {outcome.accuracy:.2%}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def worst_mistakes(outcome: Outcome, k: int) -> list[int]:
    wrong = np.flatnonzero((outcome.predicted >= 0) & (outcome.predicted != outcome.expected))
    return [int(i) for i in wrong[np.argsort(-outcome.confidence[wrong], kind="stable")][:k]]


def plot_mistakes(model: str, outcomes: list[Outcome], sets_by_name: dict, path: Path,
                  k: int = MISTAKES_PER_SET) -> int:
    """Per set, the k most confident wrong answers: the picture as sent beside the canonical input."""
    from PIL import Image

    from handlers.image_decoding import open_image
    from model_defs.preprocessing import canonicalize
    from settings.limits import LIMITS
    plt = _pyplot()
    spec = get_spec(model)
    rows = [(o, worst_mistakes(o, k)) for o in outcomes]
    rows = [(o, idx) for o, idx in rows if idx]
    shown = sum(len(idx) for _, idx in rows)
    if not rows:
        fig, ax = plt.subplots(figsize=(6, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, f"{model}: no wrong answer in these sets", ha="center", va="center")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        return 0
    fig, axes = plt.subplots(len(rows), 2 * k, figsize=(2 * k * 1.25, len(rows) * 1.75), squeeze=False)
    for r, (outcome, idx) in enumerate(rows):
        evalset = sets_by_name[outcome.set_name]
        for j in range(k):
            a_sent, a_canon = axes[r, 2 * j], axes[r, 2 * j + 1]
            a_sent.axis("off")
            a_canon.axis("off")
            if j >= len(idx):
                continue
            i = idx[j]
            picture = Image.open(io.BytesIO(evalset.items[i][0]))  # shown as sent
            picture.load()
            try:  # decoded as the handler decodes it (a large JPEG at a reduced DCT scale)
                canon = canonicalize(open_image(evalset.items[i][0], LIMITS), spec.preprocessing, spec.input_size)
            except Exception as err:  # the figure must not die on what the server refused or survived
                canon = np.zeros(spec.input_size, np.uint8)
                print(f"warning: canonicalize failed on {outcome.set_name}[{i}]: {err}", file=sys.stderr)
            shown_picture = picture.convert("RGB")
            shown_picture.thumbnail((160, 160))
            a_sent.imshow(np.asarray(shown_picture), cmap="gray")
            a_canon.imshow(canon, cmap="gray", vmin=0, vmax=255)
            true, pred = spec.labels[outcome.expected[i]], spec.labels[outcome.predicted[i]]
            group = evalset.groups[i] if evalset.groups else ""
            a_sent.set_title(f"#{i} {group}"[:22], fontsize=6)
            a_canon.set_title(f"{true}\u2192{pred} {outcome.confidence[i]:.2f}"[:22], fontsize=7, color="firebrick")
        axes[r, 0].text(-0.1, 0.5, outcome.set_name, transform=axes[r, 0].transAxes, rotation=90,
                        ha="right", va="center", fontsize=8)
    fig.suptitle(f"{model}: most confident mistakes per set "
                 "(picture sent | canonical input; true\u2192answer, confidence)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return shown


# ---- report --------------------------------------------------------------------------------------

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


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{x:.2%}"


def family_table(outcomes: list[Outcome], evalset: eval_sets.EvalSet) -> list[str]:
    models = [o.model for o in outcomes]
    category = {f.name: f.category for f in FAMILIES}
    groups = np.array(evalset.groups)
    lines = ["| font family | category | images | " + " | ".join(models) + " |",
             "|---|---|---:|" + "---:|" * len(models)]
    for name in dict.fromkeys(evalset.groups):
        mask = groups == name
        cells = [_pct(float(np.mean(o.predicted[mask] == o.expected[mask]))) for o in outcomes]
        lines.append(f"| {name} | {category.get(name, '')} | {int(mask.sum())} | " + " | ".join(cells) + " |")
    lines += ["", "| category | images | " + " | ".join(models) + " |", "|---|---:|" + "---:|" * len(models)]
    cats = np.array([category.get(g, "") for g in evalset.groups])
    for cat in dict.fromkeys(cats):
        mask = cats == cat
        cells = [_pct(float(np.mean(o.predicted[mask] == o.expected[mask]))) for o in outcomes]
        lines.append(f"| {cat} | {int(mask.sum())} | " + " | ".join(cells) + " |")
    return lines


def write_report(out: Path, figures: Path, outcomes: list[Outcome], sets_by_name: dict, url: str,
                 command: str, started: dt.datetime, seconds: float, seed: int, limit: int | None,
                 figure_files: dict) -> None:
    rel = lambda p: os.path.relpath(p, out.parent)  # noqa: E731
    models = list(dict.fromkeys(o.model for o in outcomes))
    lines = [
        "# Evaluation: the served models on what people send (issue 12)",
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
        "An answer that is not 200 counts as wrong. Regenerate with `make serve` then `make evaluate`",
        "(`evaluation/evaluate.py`); the sets are described in `evaluation/sets.py`.",
        "",
        "## Results against the targets",
        "",
        "| model | input | images | errors | accuracy | target | met |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for o in outcomes:
        spec = eval_sets.SPECS[o.set_name]
        met = "**met**" if o.accuracy >= spec.target else "not met"
        extra = f" ({o.not_sent} not sent: time limit)" if o.not_sent else ""
        lines.append(f"| {o.model} | {spec.kind} | {o.sent}{extra} | {sum(o.errors.values())} | "
                     f"{_pct(o.accuracy)} | {spec.target:.1%} | {met} |")
    errs = [(o, e, c) for o in outcomes for e, c in o.errors.items()]
    if errs:
        lines += ["", "Error answers: " + "; ".join(f"{o.model} on {o.set_name}: {c} x {e}" for o, e, c in errs)]
    for model in models:
        lines += ["", f"## {model}", ""]
        for o in (o for o in outcomes if o.model == model):
            lines.append(f"- {eval_sets.SPECS[o.set_name].kind}: {o.correct}/{o.sent} = {_pct(o.accuracy)}, "
                         f"{o.seconds:.0f} s; [confusion matrix]({rel(figure_files[(o.set_name, model)])})")
        lines += ["", "Most confident mistakes, per set (picture sent | its canonical input as this checkout's",
                  "model_defs/preprocessing.py makes it; the served archive carries its own copy):", "",
                  f"![{model} mistakes]({rel(figure_files[('mistakes', model)])})"]
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


# ---- main ----------------------------------------------------------------------------------------

def evaluate(url: str, set_names, models=None, limit=None, seed=eval_sets.SEED, workers=4, timeout=30.0,
             time_limit=1800.0, out=Path("docs/EVALUATION.md"), figures=Path("docs/evaluation"), command="",
             progress=True) -> list[Outcome]:
    url = check_url(url)
    check_server(url)
    started = dt.datetime.now()
    t0 = time.monotonic()
    deadline = t0 + time_limit
    figures.mkdir(parents=True, exist_ok=True)
    outcomes: list[Outcome] = []
    sets_by_name: dict = {}
    figure_files: dict = {}
    for name in set_names:
        spec = eval_sets.SPECS[name]
        wanted = [m for m in spec.models if models is None or m in models]
        if not wanted:
            continue
        print(f"building {name} ({spec.kind}) ...", flush=True)
        evalset = eval_sets.build(name, limit=limit, seed=seed, progress=progress)
        sets_by_name[name] = evalset
        for model in wanted:
            outcome = run_model(url, model, evalset, workers, timeout, deadline, progress)
            if outcome.errors and outcome.correct == 0 and sum(outcome.errors.values()) == outcome.sent:
                print(f"warning: every answer from {model} was an error: {dict(outcome.errors)}", file=sys.stderr)
            outcomes.append(outcome)
            met = "met" if outcome.accuracy >= spec.target else "NOT met"
            print(f"  {model:12s} {name:12s} {outcome.correct:5d}/{outcome.sent:<5d} {_pct(outcome.accuracy):>7s}"
                  f"  target {spec.target:.1%}: {met}" + (f"  errors {dict(outcome.errors)}" if outcome.errors else ""),
                  flush=True)
            path = figures / f"confusion-{name}-{model}.png"
            plot_confusion(outcome, path)
            figure_files[(name, model)] = path
    for model in dict.fromkeys(o.model for o in outcomes):
        path = figures / f"mistakes-{model}.png"
        plot_mistakes(model, [o for o in outcomes if o.model == model], sets_by_name, path)
        figure_files[("mistakes", model)] = path
    seconds = time.monotonic() - t0
    write_report(out, figures, outcomes, sets_by_name, url, command, started, seconds, seed, limit, figure_files)
    summary = [{"model": o.model, "set": o.set_name, "images": o.sent, "correct": o.correct,
                "accuracy": o.accuracy, "target": eval_sets.SPECS[o.set_name].target,
                "met": bool(o.accuracy >= eval_sets.SPECS[o.set_name].target), "errors": dict(o.errors),
                "not_sent": o.not_sent} for o in outcomes]
    (figures / "results.json").write_text(json.dumps({"date": started.isoformat(timespec="seconds"), "url": url,
                                                      "seed": seed, "limit": limit, "results": summary},
                                                     indent=2) + "\n")
    print(f"wrote {out} and {len(figure_files)} figures in {figures} ({seconds:.0f} s)")
    return outcomes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="the server's inference URL (default: make serve's, "
                        "http://127.0.0.1:INFERENCE_PORT)")
    parser.add_argument("--sets", default=",".join(eval_sets.SET_NAMES),
                        help=f"comma-separated, of: {', '.join(eval_sets.SET_NAMES)}")
    parser.add_argument("--models", default=None, help="comma-separated; default every model a set applies to")
    parser.add_argument("--limit", type=int, default=None,
                        help="at most this many pictures a set, an even share of every label")
    parser.add_argument("--seed", type=int, default=eval_sets.SEED)
    parser.add_argument("--workers", type=int, default=4, help="requests in flight at once")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--time-limit", type=float, default=1800.0, help="seconds for the whole run")
    parser.add_argument("--out", type=Path, default=None, help="the report (default docs/EVALUATION.md)")
    parser.add_argument("--figures", type=Path, default=None, help="its figures (default docs/evaluation)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"{SMOKE_LIMIT} pictures a set into results/evaluate-smoke/ (seconds long)")
    parser.add_argument("--command", default=None, help="the command to record in the report")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is not met")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.limit = args.limit or SMOKE_LIMIT
        args.out = args.out or Path("results/evaluate-smoke/EVALUATION.md")
        args.figures = args.figures or args.out.parent / "figures"
    args.out = args.out or Path("docs/EVALUATION.md")
    args.figures = args.figures or Path("docs/evaluation")
    set_names = [s.strip() for s in args.sets.split(",") if s.strip()]
    unknown = [s for s in set_names if s not in eval_sets.SPECS]
    if unknown:
        parser.error(f"unknown set(s) {unknown}; known: {', '.join(eval_sets.SET_NAMES)}")
    command = args.command or "python -m evaluation.evaluate " + " ".join(
        shlex.quote(a) for a in (argv or sys.argv[1:]))
    try:
        outcomes = evaluate(args.url or default_url(), set_names,
                            models=args.models.split(",") if args.models else None, limit=args.limit,
                            seed=args.seed, workers=args.workers, timeout=args.timeout, time_limit=args.time_limit,
                            out=args.out, figures=args.figures, command=command, progress=not args.no_progress)
    except (ServerDown, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    missed = [o for o in outcomes if not o.accuracy >= eval_sets.SPECS[o.set_name].target]
    if missed:
        print("targets not met: " + ", ".join(f"{o.model} on {o.set_name} ({_pct(o.accuracy)} < "
                                               f"{eval_sets.SPECS[o.set_name].target:.1%})" for o in missed))
    else:
        print("every target met")
    return 1 if (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
