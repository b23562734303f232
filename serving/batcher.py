"""The frontend's batcher at run time: the Java agent's JVM option, its jar checked before Java starts,
and its verdict read back (serving/java/README.md). Building the agent is serving/batcher_build.py
(`make batcher`); nothing here imports it, so the image runs without the build code.

TorchServe 0.12's Model.pollBatch holds the model's lock while it waits up to maxBatchDelay for a
batch to fill: a lone request always waits the whole delay. Our agent rewrites that wait away as the
frontend loads the class, only if the class is byte for byte TorchServe 0.12.0's; otherwise it leaves
it and TorchServe batches as it always did. Either way it writes its verdict, one line, to
tinyserve-batcher.status in Java's temp dir (the run directory's tmp/): `verdict(tmp_dir)` reads it,
and the launcher (make serve, make status) and the container's readiness check say what it means.

Standard library only: docker/healthcheck.py imports this in the image.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SOURCES = Path(__file__).resolve().parent / "java"
AGENT_JAR = SOURCES / "build" / "tinyserve-batcher.jar"
AGENT_CLASS = "tinyserve.batcher.BatcherAgent"
STATUS_FILE = "tinyserve-batcher.status"  # BatcherAgent.STATUS_FILE, in java.io.tmpdir
OURS = "installed"  # the verdict when our batcher runs


class BatcherBuildError(RuntimeError):
    """The agent is missing or could not be built: the message says what is missing and what to do."""


@dataclass(frozen=True)
class Verdict:
    """What the agent in a running frontend decided: `state` is "installed" (our batcher), "refused"
    (not the TorchServe it was written for), "failed" (the rewrite did not apply), "pending" (Java has
    not loaded the class yet) or "absent" (no verdict: Java started without the agent, or not yet)."""
    state: str
    why: str

    @property
    def ours(self) -> bool:
        return self.state == OURS

    def describe(self) -> str:
        """One line for people: which batcher runs, and why."""
        if self.ours:
            return f"ours: {self.why}"
        if self.state == "pending":
            return f"not decided yet: {self.why}"
        return f"TorchServe's own (waits up to maxBatchDelay per batch), our agent {self.state}: {self.why}"


def verdict(tmp_dir: Path) -> Verdict:
    """The agent's verdict in a frontend whose java.io.tmpdir is `tmp_dir`."""
    try:
        line = (Path(tmp_dir) / STATUS_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return Verdict("absent", f"no {STATUS_FILE} in {tmp_dir}: Java did not start with the agent "
                                 "(vmargs without -javaagent:) or has not started")
    state, _, why = line.partition(" ")
    return Verdict(state, why)


def vm_option(jar: Path = AGENT_JAR) -> str:
    """The JVM option that installs the batcher (config.properties' vmargs)."""
    return f"-javaagent:{jar}"


def agents(properties: str) -> list[str]:
    """The `-javaagent:` jars in config.properties' vmargs."""
    return [jar for line in properties.splitlines() if line.startswith("vmargs=")
            for jar in re.findall(r"-javaagent:([^\s=]+)", line)]


def require_agents(properties: str) -> None:
    """BatcherBuildError when a `-javaagent:` jar in config.properties' vmargs is missing (Java would exit
    with a bare "Error opening zip file"): checked before Java starts by the launcher (serving/server.py)
    and, through `python -m serving.config`, by the container's entrypoint."""
    for jar in agents(properties):
        if not Path(jar).is_file():
            hint = (" (build it with `make batcher`; make serve, make test and make docker do)"
                    if Path(jar) == AGENT_JAR else "")
            raise BatcherBuildError(f"the frontend's Java agent {jar} is missing{hint}")
