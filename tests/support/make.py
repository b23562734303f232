"""Ask make: the output of a make target run silently from the repository root.
"""
from __future__ import annotations

import subprocess

from tests.support.paths import REPO as ROOT


def make_vars(*args: str) -> str:
    result = subprocess.run(["make", "-s", "--no-print-directory", *args], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout
