"""The one reader of the artifacts folder: what training and export left for each model.

    artifacts/<model>/checkpoint.pt   training's state_dict      (export/train.py)
    artifacts/<model>/metrics.json    held-out accuracy and more (export/train.py)
    artifacts/<model>/model.pt        the TorchScript model      (export/to_torchscript.py)
    artifacts/<model>/manifest.json   input size, labels, sha256 (export/to_torchscript.py)
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts"


def path(model: str, filename: str, artifacts: Path = ARTIFACTS) -> Path:
    """artifacts/<model>/<filename>, whether or not it exists yet."""
    return artifacts / model / filename


def read_json(model: str, filename: str, artifacts: Path = ARTIFACTS) -> dict:
    """artifacts/<model>/<filename> parsed, or {} when it is missing or unreadable."""
    try:
        return json.loads(path(model, filename, artifacts).read_text())
    except (OSError, ValueError):
        return {}


def manifest(model: str, artifacts: Path = ARTIFACTS) -> dict:
    """The export manifest (input size, labels, preprocessing, data source, sha256), or {}."""
    return read_json(model, "manifest.json", artifacts)


def metrics(model: str, artifacts: Path = ARTIFACTS) -> dict:
    """Training's metrics (held-out accuracy, per class, history), or {}."""
    return read_json(model, "metrics.json", artifacts)


def scripted_model(model: str, artifacts: Path = ARTIFACTS) -> torch.jit.ScriptModule:
    """The exported TorchScript model, in eval mode; FileNotFoundError says how to make it."""
    file = path(model, "model.pt", artifacts)
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing: run `make export` first")
    return torch.jit.load(str(file)).eval()
