"""The sha256 of a file: the export manifest records the model's, the handler checks it at load."""
from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of the file's bytes, read in chunks by hashlib."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
