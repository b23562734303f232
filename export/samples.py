"""Write a few real held-out images as PNG files to try the served models with.

    python -m export.samples [--out samples]

samples/digit.png is a held-out handwritten 7 (a 28x28 MNIST digit from the held-out fifth, or your MNIST test split),
samples/shoe.png a Fashion-MNIST test sneaker: pictures no model was trained on, exactly as a
client would send them (`curl -T samples/digit.png http://127.0.0.1:8080/predictions/lenet5`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from export.datasets import DataSetMissing
from export.heldout import held_out

# file name -> (model whose held-out data it comes from, the label it shows)
SAMPLES = {"digit.png": ("lenet5", "7"), "shoe.png": ("fashion_mlp", "Sneaker")}


def write_samples(out: Path) -> dict[str, str]:
    """The first held-out image of each sample's label, as the PNG the load tests send."""
    out.mkdir(parents=True, exist_ok=True)
    for filename, (model, label) in SAMPLES.items():
        data = held_out(model)
        (out / filename).write_bytes(data.pngs[data.labels.index(label)])
    return {filename: label for filename, (_, label) in SAMPLES.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("samples"))
    args = parser.parse_args(argv)
    try:
        written = write_samples(args.out)
    except DataSetMissing as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for filename, label in written.items():
        print(f"{args.out / filename}: a held-out {label!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
