"""The checked-in weights: what `make serve` serves on a fresh clone, and how they were made.

    python -m export.weights install lenet5 [--artifacts artifacts]   # weights/ -> artifacts/, digest checked
    python -m export.weights publish lenet5 [--artifacts artifacts]   # artifacts/ -> weights/ (after make train)

weights/<model>/ holds training's checkpoint.pt, metrics.json and training.png, and provenance.json:
the checkpoint's sha256, the command that trained it, the machine, torch and the seconds it took.
Training is seeded and single-threaded, so `make train` on the same kind of CPU makes the same bytes;
another CPU's float kernels make other bytes with accuracy within the spread export/README.md gives.
Serving from checked-in weights keeps a fresh clone's figures the README's on every machine.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from export import artifacts
from handlers.digest import sha256_of
from model_defs.registry import MODELS
from settings.machine import cpu_model

WEIGHTS = artifacts.REPO / "weights"
FILES = ("checkpoint.pt", "metrics.json", "training.png")


class WeightsError(RuntimeError):
    """Checked-in weights missing or not the bytes their provenance names; the message says what to do."""


def provenance(model: str, weights: Path = WEIGHTS) -> dict:
    path = weights / model / "provenance.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise WeightsError(f"{path} is missing or unreadable ({err}): `make train` then "
                           f"`make weights` makes it") from None


def install(model: str, out: Path = artifacts.ARTIFACTS, weights: Path = WEIGHTS) -> Path:
    """weights/<model>/ into artifacts/<model>/, after checking the checkpoint's digest."""
    source = weights / model
    expected = provenance(model, weights)["checkpoint_sha256"]
    got = sha256_of(source / "checkpoint.pt")
    if got != expected:
        raise WeightsError(f"{source / 'checkpoint.pt'} has sha256 {got}, its provenance.json says {expected}: "
                           "the file changed since it was published (git checkout weights/ restores it)")
    target = out / model
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(source / name, target / name)
    return target


def publish(model: str, command: str, machine: str, out: Path = artifacts.ARTIFACTS,
            weights: Path = WEIGHTS) -> dict:
    """artifacts/<model>/'s training outputs into weights/<model>/, with their provenance."""
    source = out / model
    metrics = artifacts.metrics(model, out)
    if not metrics:
        raise WeightsError(f"{source / 'metrics.json'} is missing: `make train` first")
    target = weights / model
    target.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(source / name, target / name)
    record = {
        "model": model,
        "checkpoint_sha256": sha256_of(target / "checkpoint.pt"),
        "command": command,
        "machine": machine,
        **{key: metrics.get(key) for key in ("data_source", "seed", "epochs", "seconds", "torch_version",
                                             "validation_accuracy", "heldout_accuracy")},
    }
    (target / "provenance.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("install", "publish"))
    parser.add_argument("models", nargs="+", choices=list(MODELS))
    parser.add_argument("--artifacts", type=Path, default=artifacts.ARTIFACTS)
    parser.add_argument("--command", default="make train", help="publish: the command that trained them")
    args = parser.parse_args(argv)
    try:
        for model in args.models:
            if args.action == "install":
                print(f"{model}: checked-in weights -> {install(model, args.artifacts)}")
            else:
                record = publish(model, args.command, cpu_model(), args.artifacts)
                print(f"{model}: published, sha256 {record['checkpoint_sha256'][:12]}")
    except WeightsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
