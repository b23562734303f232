"""Calibrate a trained model's probabilities on the validation part: a softmax temperature, kept
only if it lowers the validation part's expected calibration error.

    python -m export.calibrate [--models lenet5 ...] [--artifacts artifacts]

Reads artifacts/<model>/checkpoint.pt, fits T on the validation part's outputs (export/calibration.py;
the held-out test part is never looked at for it), and writes `temperature` into the checkpoint, which
the exported model divides its outputs by before the softmax (export/to_torchscript.py). metrics.json
gets the validation ECE before and after, and the held-out ECE with the temperature kept (measured,
not chosen on). `make train` runs it after training.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from export import artifacts
from export.calibration import ECE_BINS, apply_temperature, expected_calibration_error, fit_temperature
from export.datasets import DataSetMissing, canonical_batch, load_raw
from export.to_torchscript import load_serving_model
from export.train import outputs
from model_defs.registry import MODELS, get_spec


def calibrate(model: str, out: Path = artifacts.ARTIFACTS) -> dict:
    """Fit, decide and record the model's temperature; returns what metrics.json's "calibration" holds."""
    spec = get_spec(model)
    path = out / model / "checkpoint.pt"
    serving, checkpoint = load_serving_model(spec, path)
    net = serving.net
    raw = load_raw(checkpoint["data_source"], checkpoint.get("data_dir"))
    mean, std = checkpoint["mean"], checkpoint["std"]

    def outputs_on(images) -> np.ndarray:
        return outputs(net, torch.from_numpy(canonical_batch(images, spec)), mean, std).numpy()

    validation, labels = outputs_on(raw.validation_images), raw.validation_labels
    fitted = fit_temperature(validation, labels)
    before = expected_calibration_error(apply_temperature(validation, 1.0), labels)
    after = expected_calibration_error(apply_temperature(validation, fitted), labels)
    temperature = fitted if after < before else 1.0
    test = outputs_on(raw.test_images)
    record = {
        "temperature": temperature,
        "fitted_temperature": fitted,
        "validation_ece": before,
        "validation_ece_with_fitted": after,
        "heldout_ece": expected_calibration_error(apply_temperature(test, temperature), raw.test_labels),
        "bins": ECE_BINS,
    }
    checkpoint["temperature"] = temperature
    torch.save(checkpoint, path)
    metrics = artifacts.metrics(model, out)
    metrics["calibration"] = record
    (out / model / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--artifacts", type=Path, default=artifacts.ARTIFACTS)
    args = parser.parse_args(argv)
    for model in args.models:
        try:
            record = calibrate(model, args.artifacts)
        except (DataSetMissing, FileNotFoundError) as err:
            print(f"error: cannot calibrate {model}: {err}", file=sys.stderr)
            return 2
        kept = "kept" if record["temperature"] != 1.0 else "not kept (no better on validation)"
        print(f"{model}: temperature {record['fitted_temperature']:.3f} {kept}; validation ECE "
              f"{record['validation_ece']:.2%} -> {record['validation_ece_with_fitted']:.2%}; "
              f"held-out ECE {record['heldout_ece']:.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
