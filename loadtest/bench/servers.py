"""The benchmark's servers: one model store per variant (loadtest/archives.py) and one TorchServe
per variant, started together with the lifecycle API (serving/server.py) and stopped at the end."""
from __future__ import annotations

import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from export.archive import ArchiveError
from loadtest.archives import BUILD, variant_store
from serving.config import jvm_options
from serving.server import Server, running_together
from settings.model_serving import ModelServing
from settings.ports import HOST, Ports

ROOT = Path(__file__).resolve().parents[2]
CONTAINER_LOG4J = ROOT / "docker" / "log4j2.xml"
START_TIMEOUT_S = 240.0
PORT_STRIDE = 10  # server i on port_base + 10 * i (+1 management, +2 metrics)

Log = Callable[[str], None]


def server_extra(logging: str, batcher: bool = True) -> dict[str, str]:
    """config.properties lines for the benchmark servers beyond the local profile: the production
    container's JVM options (serving/config.py jvm_options) and its logging (docker/log4j2.xml, stdout
    only, no per-request lines; stdout lands in <run dir>/logs/console.log), or TorchServe's own log4j2.xml
    ("torchserve": five log files, several lines per request) to measure what logging costs.
    `batcher=False`: TorchServe's own batcher instead of ours (serving/batcher.py)."""
    vmargs = jvm_options("production", batcher=batcher)
    if logging == "container":
        if not CONTAINER_LOG4J.is_file():
            raise ArchiveError(f"{CONTAINER_LOG4J} is missing; run with --logging torchserve")
        vmargs = f"{vmargs} -Dlog4j.configurationFile=file://{CONTAINER_LOG4J}".strip()
    elif logging != "torchserve":
        raise ValueError(f"logging {logging!r}: expected container or torchserve")
    return {"vmargs": vmargs} if vmargs else {}


def store_for(variant: str, model: str, serving: ModelServing | None = None, build: Path = BUILD) -> Path:
    """The model store of one variant: "handler" (model_store/ as `make archive` built it), "noop",
    "batch1", or our handler under `serving` (tuning), built under `build` (ArchiveError if it cannot be)."""
    return variant_store(variant, model, serving, build=build)


def port_layout(names: list[str], port_base: int) -> dict[str, Ports]:
    """Server i on Ports.at(port_base + 10 * i); port_base 0: ports the OS says are free, all different."""
    if port_base:
        return {name: Ports.at(port_base + PORT_STRIDE * i) for i, name in enumerate(names)}
    taken: set[int] = set()
    layout = {}
    for name in names:
        ports = Ports.free()
        while taken & set(vars(ports).values()):
            ports = Ports.free()
        taken |= set(vars(ports).values())
        layout[name] = ports
    return layout


@contextmanager
def servers_running(runs: dict[str, tuple[Path, dict | None] | tuple[Path, dict | None, bool]], port_base: int,
                    prefix: str, keep_logs: bool,
                    log: Log = print) -> Iterator[dict[str, Server]]:
    """One server per run {name: (model store, extra config[, behind nginx])} (ports: port_layout) in
    <tmp>/<prefix>XXXX/<name>; TorchServe alone unless the run asks for the proxy,
    started together and stopped at the end. The system temp dir keeps the workers' socket paths
    (<run dir>/tmp/.ts.sock.9000) under AF_UNIX's 107 bytes however deep --results is. The run dirs
    are removed at the end unless keep_logs (and kept when a start fails: the error names its logs)."""
    run_root = Path(tempfile.mkdtemp(prefix=prefix))
    starts = {}
    for name, ports in port_layout(list(runs), port_base).items():
        store, extra, *behind_nginx = runs[name]
        log(f"  starting the {name} server on {HOST}:{ports.inference} (store {store})")
        starts[name] = dict(run_dir=run_root / re.sub(r"[^A-Za-z0-9_.-]", "_", name), model_store=store,
                            ports=ports, timeout=START_TIMEOUT_S, extra=extra or None,
                            proxy=bool(behind_nginx and behind_nginx[0]))
    started = False
    try:
        with running_together(starts) as servers:
            started = True
            yield servers
    finally:
        if started and not keep_logs:
            shutil.rmtree(run_root, ignore_errors=True)
        elif started:
            log(f"  kept the servers' run directories (logs/ in each): {run_root}")
