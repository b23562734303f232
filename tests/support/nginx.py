"""What the proxy tests read off a running nginx and how they print timings."""
from __future__ import annotations

import statistics

import psutil

from serving import proxy
from serving.server import Server

PREDICT = "/predictions/lenet5"


def nginx_pids(server: Server) -> list[int]:
    """The proxy's master and its workers."""
    master = proxy.pid(server.proxy_dir)
    assert master is not None, "the proxy is not running"
    return [master, *(child.pid for child in psutil.Process(master).children())]


def seconds(values) -> str:
    """min / median / max of the given seconds (None left out)."""
    values = sorted(v for v in values if v is not None)
    if not values:
        return "none"
    return f"min {values[0]:.2f} / median {statistics.median(values):.2f} / max {values[-1]:.2f} s"
