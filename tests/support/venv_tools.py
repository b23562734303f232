"""The offline tools requirements.txt installs into the venv (hadolint, kubectl).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: it comes from requirements.txt; run `make venv` (make test does)")
    return str(path)
