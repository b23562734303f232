"""What one start of TorchServe wrote to its logs: where each log ended before it (logs/ keeps
earlier runs'), the most telling lines of this run, and the archives it failed to load.

The logging itself is configured by serving/log4j2.xml (the run dir's logs/, bounded on disk).
"""
from __future__ import annotations

import re
from pathlib import Path

LOG4J_CONFIG = Path(__file__).resolve().parent / "log4j2.xml"
CONSOLE_LOG = "console.log"  # Java's stdout and stderr (start-up and JVM messages; log4j writes to files)
TS_LOG = "ts_log.log"
LOG_FILES = (TS_LOG, CONSOLE_LOG)
TELLING = ("ERROR", "Exception", "Error:", "error:", "Backend worker", "Failed to load model")
LOAD_FAILURE = re.compile(r"Failed to load model:?\s*(?P<archive>\S+)")


def offsets(log_dir: Path) -> dict[str, int]:
    """Where each log ends now, in bytes: a run's own lines are what follows."""
    return {name: (log_dir / name).stat().st_size if (log_dir / name).is_file() else 0 for name in LOG_FILES}


def new_lines(log_dir: Path, name: str, since: dict[str, int] | None) -> list[str]:
    """The lines this run wrote to one log (all of it without `since`, or after it rolled over)."""
    log = log_dir / name
    if not log.is_file():
        return []
    start = (since or {}).get(name, 0)
    with log.open("rb") as f:
        if start > log.stat().st_size:  # rolled over since: the new file is all ours
            start = 0
        f.seek(start)
        return f.read().decode("utf-8", errors="replace").splitlines()


def reason(log_dir: Path, lines: int = 15, since: dict[str, int] | None = None) -> str:
    """The most telling lines of this run's TorchServe log (ts_log.log) and of Java's own output
    (console.log: a JVM that fails before logging starts says why only there): errors first, else
    the tail. With `since` (from offsets() before the start), only lines written since."""
    found = []
    for name in LOG_FILES:
        text = new_lines(log_dir, name, since)
        if not text:
            continue
        wanted = [line for line in text if any(word in line for word in TELLING)]
        picked = (wanted or text)[-lines:]
        found.append("\n".join("    " + line[:300] for line in picked) + f"\n  (full log: {log_dir / name})")
    return "\n".join(found) or f"(nothing logged in {log_dir} by this start)"


def load_failures(log_dir: Path, since: dict[str, int] | None) -> list[str]:
    """'<archive>: <reason>' for each model TorchServe logged it failed to load during this run.
    The reason is the first exception line after the failure (TorchServe logs the stack trace)."""
    text = new_lines(log_dir, TS_LOG, since)
    failures = []
    for i, line in enumerate(text):
        match = LOAD_FAILURE.search(line)
        if not match:
            continue
        after = [later.strip() for later in text[i + 1:i + 30]
                 if ("Exception" in later or "Error" in later) and not later.strip().startswith("at ")]
        failures.append(f"{Path(match['archive']).name}: {(after[0] if after else line.strip())[:300]}")
    return failures
