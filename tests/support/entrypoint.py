"""docker/entrypoint.sh run outside a container, on loopback, the way the pod runs it: started with
its output in a file, and everything it started ended afterwards, whatever the test did."""
from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psutil

from settings.ports import HOST, Ports
from tests.support.paths import REPO

ENTRYPOINT = REPO / "docker" / "entrypoint.sh"


def entrypoint_env(ports: Ports, model_store: Path, work_dir: Path) -> dict[str, str]:
    """This environment plus the pod's variables: loopback, `ports`, this venv's tools first on the PATH."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "LISTEN_ADDRESS": HOST, "MODEL_STORE": str(model_store), "WORK_DIR": str(work_dir), **ports.to_env()}


class Entrypoint:
    """The running script; `processes()` snapshots what it started, and those are ended at the end
    even after the script itself is gone."""

    def __init__(self, script: subprocess.Popen, log: Path):
        self.script, self.log = script, log
        self.seen: dict[int, psutil.Process] = {}

    def processes(self) -> list[psutil.Process]:
        children = psutil.Process(self.script.pid).children(recursive=True)
        self.seen.update((p.pid, p) for p in children)
        return children

    def assert_running(self) -> None:
        assert self.script.poll() is None, \
            f"entrypoint exited ({self.script.returncode}):\n{self.log.read_text()[-3000:]}"


@contextmanager
def entrypoint_running(env: dict[str, str], log: Path) -> Iterator[Entrypoint]:
    with log.open("wb") as out:
        script = subprocess.Popen([str(ENTRYPOINT)], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)
    run = Entrypoint(script, log)
    try:
        yield run
    finally:
        if script.poll() is None:
            run.processes()
            script.kill()
            script.wait(timeout=10)
        for process in run.seen.values():
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
