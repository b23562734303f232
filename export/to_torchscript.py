"""Export trained checkpoints to self-contained TorchScript, verify them, write a manifest.

    python -m export.to_torchscript [--models ...] [--artifacts artifacts]

The exported module takes a uint8 tensor [N, 1, H, W] of canonical images (0..255) and returns
softmax probabilities [N, classes]: scaling and normalisation are baked in, so the handler has
no magic numbers. The export fails when eager and TorchScript outputs differ by more than
PARITY_TOLERANCE on the held-out images. artifacts/<name>/manifest.json records the torch
version, input shape, labels, normalisation and the sha256 of model.pt; it is packed into the
archive as the handler's metadata.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn as nn

from export.datasets import DataSetMissing, canonical_batch, load_raw
from handlers.digest import sha256_of
from model_defs.registry import MODELS, ModelSpec

PARITY_TOLERANCE = 1e-5


class ExportError(RuntimeError):
    pass


class ServingModel(nn.Module):
    """uint8 canonical images [N,1,H,W] -> softmax probabilities [N,C], at the calibrated temperature."""

    def __init__(self, net: nn.Module, mean: float, std: float, temperature: float = 1.0):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))
        self.register_buffer("temperature", torch.tensor(temperature, dtype=torch.float32))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.to(torch.float32) / 255.0 - self.mean) / self.std
        # softmax(log_softmax(z) / T) == softmax(z / T): right for models ending in logits or log-probs
        return torch.softmax(self.net(x) / self.temperature, dim=1)


def load_serving_model(spec: ModelSpec, checkpoint_path: Path) -> tuple[ServingModel, dict]:
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    net = spec.build()
    net.load_state_dict(checkpoint["state_dict"])
    # export/calibrate.py's temperature; 1.0 for a checkpoint it has not seen
    temperature = checkpoint.get("temperature", 1.0)
    return ServingModel(net, checkpoint["mean"], checkpoint["std"], temperature).eval(), checkpoint


@torch.no_grad()
def max_difference(eager: nn.Module, scripted: torch.jit.ScriptModule, images: torch.Tensor) -> float:
    worst = 0.0
    for chunk in images.split(1000):
        batch = chunk.unsqueeze(1)
        worst = max(worst, float((eager(batch) - scripted(batch)).abs().max()))
    return worst


def export_model(spec: ModelSpec, model_dir: Path) -> dict:
    checkpoint_path = model_dir / "checkpoint.pt"
    if not checkpoint_path.is_file():
        raise ExportError(f"{checkpoint_path} is missing: run `make train` first")
    eager, checkpoint = load_serving_model(spec, checkpoint_path)
    scripted = torch.jit.script(eager)
    out_path = model_dir / "model.pt"
    scripted.save(str(out_path))
    reloaded = torch.jit.load(str(out_path), map_location="cpu").eval()

    # the held-out part only: canonicalising the 51,257 training images for nothing took 8 s
    raw = load_raw(checkpoint["data_source"], checkpoint.get("data_dir"))
    held_out = torch.from_numpy(canonical_batch(raw.test_images, spec))
    difference = max_difference(eager, reloaded, held_out)
    if difference > PARITY_TOLERANCE:
        out_path.unlink()
        raise ExportError(f"{spec.name}: TorchScript differs from eager by {difference:.2e} "
                          f"(> {PARITY_TOLERANCE}) on held-out images; model.pt removed")
    manifest = {
        **spec.metadata(),
        "input_shape": [1, *spec.input_size],
        "input_dtype": "uint8",
        "output": "softmax probabilities",
        "normalisation": {"mean": checkpoint["mean"], "std": checkpoint["std"]},
        "temperature": checkpoint.get("temperature", 1.0),
        "data_source": checkpoint["data_source"],
        "data_dir": checkpoint.get("data_dir"),
        "torch_version": torch.__version__,
        "serialized_file": out_path.name,
        "sha256": sha256_of(out_path),
        "parity_max_abs_difference": difference,
        "parity_images": int(len(held_out)),
    }
    (model_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    args = parser.parse_args(argv)
    for name in args.models:
        try:
            manifest = export_model(MODELS[name], args.artifacts / name)
        except (ExportError, DataSetMissing) as err:
            print(f"error: export failed: {err}", file=sys.stderr)
            return 1
        print(f"{name}: exported {args.artifacts / name / 'model.pt'} (sha256 {manifest['sha256'][:12]}..., "
              f"max |eager - TorchScript| = {manifest['parity_max_abs_difference']:.1e} "
              f"on {manifest['parity_images']} held-out images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
