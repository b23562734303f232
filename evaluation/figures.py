"""The evaluation's figures: a confusion matrix per model and set, per model its most confident
mistakes beside the canonical input the model saw, and per model a reliability diagram of its sets."""
from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix

from evaluation.client import Outcome
from export.calibration import ECE_BINS
from model_defs.registry import get_spec

MISTAKES_PER_SET = 6


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def confusion(outcome: Outcome, classes: int) -> np.ndarray:
    """Counts [true, answered] over `classes` rows and classes + 1 columns, the last one: no answer."""
    answered = np.where(outcome.predicted >= 0, outcome.predicted, classes)
    return confusion_matrix(outcome.expected, answered, labels=np.arange(classes + 1))[:classes]


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


def plot_reliability(model: str, outcomes: list[Outcome], path: Path) -> None:
    """Per set, accuracy against mean top probability in ECE_BINS bins, the diagonal, and the answers per bin."""
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.5, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    most = 1
    for outcome in outcomes:
        curve = outcome.reliability()
        most = max(most, curve.total)
        filled = curve.count > 0
        line, = top.plot(curve.confidence[filled], curve.accuracy[filled], marker="o", markersize=4,
                         label=f"{outcome.set_name}: ECE {curve.ece:.2%}" if curve.total else
                         f"{outcome.set_name}: no answer")
        if curve.total:  # a share of the answers, so that sets of different sizes share one axis
            bottom.stairs(curve.count / curve.total, curve.edges, color=line.get_color())
    top.set_xlim(0, 1)
    top.set_ylim(0, 1.02)
    top.set_ylabel("accuracy")
    top.set_title(f"{model}: reliability ({ECE_BINS} bins of the answered label's probability)", fontsize=10)
    top.legend(loc="lower right", fontsize=8)  # below the diagonal at high confidence: rarely any points there
    # most answers sit in the last bin: a log scale keeps the others visible
    bottom.set_ylim(0.5 / most, 1.5)  # empty bins would otherwise pull the axis down without end
    bottom.set_yscale("log")
    bottom.set_xlabel("confidence (probability of the answered label)")
    bottom.set_ylabel("share of answers")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
