"""config.properties (TorchServe's) as key -> value, comments and blank lines left out.
"""
from __future__ import annotations


def parse_properties(text: str) -> dict:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
