"""Write a few real held-out images as PNG files to try the served models with.

    python -m export.samples [--out samples]

samples/digit.png is a held-out handwritten 7 (scikit-learn's digits, or your MNIST test split),
samples/shoe.png a Fashion-MNIST test sneaker: pictures no model was trained on, exactly as a
client would send them (`curl -T samples/digit.png http://127.0.0.1:8080/predictions/lenet5`).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from export.datasets import DataSetMissing, load_held_out
from loadtest.images import png_bytes
from model_defs.registry import get_spec

# file name -> (model whose held-out data it comes from, the label it shows)
SAMPLES = {"digit.png": ("lenet5", "7"), "shoe.png": ("fashion_mlp", "Sneaker")}


def write_samples(out: Path, artifacts: Path = Path("artifacts")) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for filename, (model, label) in SAMPLES.items():
        spec = get_spec(model)
        manifest_path = artifacts / model / "manifest.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
        _, images, labels = load_held_out(spec, manifest)
        index = next(i for i, y in enumerate(labels) if spec.labels[int(y)] == label)
        (out / filename).write_bytes(png_bytes(images[index]))
        written[filename] = label
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("samples"))
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    args = parser.parse_args(argv)
    try:
        written = write_samples(args.out, args.artifacts)
    except DataSetMissing as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for filename, label in written.items():
        print(f"{args.out / filename}: a held-out {label!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
