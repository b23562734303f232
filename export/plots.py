"""Plots a person would rather look at than read: training curves and confusion matrices."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_training(history: dict, confusion: np.ndarray, labels, title: str, path: Path) -> None:
    fig, (curve, matrix) = plt.subplots(1, 2, figsize=(12, 5))
    curve.plot(history["epoch"], history["train_loss"], color="tab:blue", label="training loss")
    curve.set_xlabel("epoch")
    curve.set_ylabel("training loss", color="tab:blue")
    accuracy = curve.twinx()
    accuracy.plot(history["epoch"], history["validation_accuracy"], color="tab:orange", label="validation accuracy")
    accuracy.set_ylabel("validation accuracy", color="tab:orange")
    curve.set_title(f"{title}: training curve")
    image = matrix.imshow(confusion, cmap="Blues")
    matrix.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    matrix.set_yticks(range(len(labels)), labels, fontsize=8)
    matrix.set_xlabel("predicted")
    matrix.set_ylabel("true")
    matrix.set_title("held-out confusion matrix")
    for (row, col), count in np.ndenumerate(confusion):
        if count:
            matrix.text(col, row, str(count), ha="center", va="center", fontsize=7,
                        color="white" if count > confusion.max() / 2 else "black")
    fig.colorbar(image, ax=matrix, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
