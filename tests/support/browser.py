"""A real browser for the page's tests: Debian's chromium, driven by Playwright's Python API.

Playwright's own browser download is not used (it is not reachable from here): the tests launch
the chromium that `make test` installs with apt (mk/browser.mk), or the one TINYSERVE_CHROMIUM names.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser")  # Debian's package, and the name other distributions use
ENV_VAR = "TINYSERVE_CHROMIUM"


def find_chromium() -> Path | None:
    """TINYSERVE_CHROMIUM when set (it must exist), else the first chromium on the PATH, else None."""
    given = os.environ.get(ENV_VAR)
    if given:
        path = Path(given)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise FileNotFoundError(f"{ENV_VAR}={given} is not an executable file")
        return path
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def launch_args() -> list[str]:
    """Chromium's sandbox refuses to run as root: the tests (CI, containers) often are."""
    return ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []


def launch(playwright, executable: Path):
    """A headless Chromium from `executable` (a Playwright sync API object)."""
    return playwright.chromium.launch(executable_path=str(executable), headless=True, args=launch_args())
