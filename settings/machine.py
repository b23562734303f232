"""The machine a server and its measurements run on, as reports name it."""
from __future__ import annotations

import platform


def cpu_model() -> str:
    """The CPU's marketing name; psutil and platform give none on Linux, so /proc/cpuinfo's first one."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
