"""Where the tests find the repository's built things: tests import these instead of each other."""
from __future__ import annotations

from pathlib import Path

import pytest

from export.artifacts import ARTIFACTS, REPO

MODEL_STORE = REPO / "model_store"  # what `make archive` writes and the servers load
__all__ = ["ARTIFACTS", "MODEL_STORE", "REPO", "artifact"]


def artifact(name: str, filename: str) -> Path:
    """artifacts/<name>/<filename>; the test fails, saying to run `make export`, when it is missing."""
    path = ARTIFACTS / name / filename
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make export` (or `make test`, which builds it)")
    return path
