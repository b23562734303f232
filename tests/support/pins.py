"""The pinned versions of a requirements file (the floor's, the peers', the main venv's)."""
from __future__ import annotations

import re
from pathlib import Path


def pins(path: Path, every_line: bool) -> dict[str, str]:
    """name -> version of a requirements file's name[extras]==version lines; every_line: all must be such."""
    found = {}
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[a-z,]+\])?==([^\s;]+)", line)
        if every_line and line:
            assert match, f"{Path(path).name}: {line!r} is not pinned with =="
        if match:
            found[match[1].lower().replace("_", "-")] = match[3]
    return found
