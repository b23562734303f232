"""Where the tests find the repository's built things: tests import these instead of each other."""
from __future__ import annotations

from pipeline.artifacts import ARTIFACTS, REPO

MODEL_STORE = REPO / "model_store"  # what `make archive` writes and the servers load
__all__ = ["ARTIFACTS", "MODEL_STORE", "REPO"]
