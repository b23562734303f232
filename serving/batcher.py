"""The frontend's batcher: TorchServe 0.12's Model class with a batch that does not wait, as a Java agent.

    python -m serving.batcher          # build serving/java/build/tinyserve-batcher.jar (make batcher)

TorchServe 0.12's Model.pollBatch holds the model's lock while it waits up to maxBatchDelay for a
batch to fill: a lone request always waits the whole delay, and no other worker takes jobs meanwhile.
serving/java/Model.java is upstream's file at v0.12.0 with that wait taken out (the batch is the jobs
queued now); serving/java/BatcherAgent.java puts it in place of the jar's when Java starts
(`-javaagent:`, in config.properties' vmargs, serving/config.py). Why and what it measured:
serving/java/README.md.

The build compiles both against the installed frontend jar (javac --release 8, the jar's own class
version), after checking that jar's classes are the ones Model.java was written against (UPSTREAM),
and records their SHA-256 in the agent: it replaces nothing unless the running TorchServe's classes
are those (it says so on stderr), so a different TorchServe runs unchanged rather than with a class
built for another version.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SOURCES = Path(__file__).resolve().parent / "java"
AGENT_JAR = SOURCES / "build" / "tinyserve-batcher.jar"
AGENT_CLASS = "tinyserve.batcher.BatcherAgent"
REPLACED = "replaced.properties"  # BatcherAgent.REPLACED
REPLACEMENT_DIR = "replacement/"  # BatcherAgent.REPLACEMENT_DIR
REPLACED_PACKAGE = "org/pytorch/serve/wlm/"
# What serving/java/Model.java was written against: TorchServe 0.12.0's model-server.jar, SHA-256 of each
# class it replaces. Another frontend fails the build: port the change to its Model.java first.
UPSTREAM = {
    "org/pytorch/serve/wlm/Model": "7c5523f1fe77fe79aa32665469e17725e70518692abcf4987989ef72f10d4cff",
    "org/pytorch/serve/wlm/Model$1": "d9b70e742cfc997448b5bdc066828bfbe8b30d459fcb34e7399990c82f9e96e8",
}


class BatcherBuildError(RuntimeError):
    """The agent is missing or could not be built: the message says what is missing and what to do."""


def frontend_jar() -> Path:
    """TorchServe's frontend (ts/frontend/model-server.jar) in this Python's environment."""
    import ts  # noqa: PLC0415 (the serving venv's TorchServe, only when building)

    jar = Path(ts.__file__).resolve().parent / "frontend" / "model-server.jar"
    if not jar.is_file():
        raise BatcherBuildError(f"TorchServe's frontend jar is not at {jar}: reinstall torchserve (make venv)")
    return jar


def vm_option(jar: Path = AGENT_JAR) -> str:
    """The JVM option that installs the batcher (config.properties' vmargs)."""
    return f"-javaagent:{jar}"


def require_agents(properties: str) -> None:
    """BatcherBuildError when a `-javaagent:` jar in config.properties' vmargs is missing (Java would exit
    with a bare "Error opening zip file"): checked before Java starts by the launcher (serving/server.py)
    and, through `python -m serving.config`, by the container's entrypoint."""
    for line in properties.splitlines():
        if line.startswith("vmargs="):
            for jar in re.findall(r"-javaagent:([^\s=]+)", line):
                if not Path(jar).is_file():
                    hint = (" (build it with `make batcher`; make serve, make test and make docker do)"
                            if Path(jar) == AGENT_JAR else "")
                    raise BatcherBuildError(f"the frontend's Java agent {jar} is missing{hint}")


def sources() -> list[Path]:
    return sorted(SOURCES.glob("*.java"))


def upstream_digests(frontend: Path, class_names: list[str]) -> dict[str, str]:
    """class name (internal form, e.g. org/pytorch/serve/wlm/Model) -> SHA-256 of the jar's class."""
    with zipfile.ZipFile(frontend) as jar:
        present = set(jar.namelist())
        missing = [name for name in class_names if f"{name}.class" not in present]
        if missing:
            raise BatcherBuildError(f"{frontend} has no {', '.join(missing)}: serving/java/Model.java is "
                                    "TorchServe 0.12.0's; this TorchServe is another version")
        return {name: hashlib.sha256(jar.read(f"{name}.class")).hexdigest() for name in class_names}


def build(jar: Path = AGENT_JAR, frontend: Path | None = None) -> Path:
    """Compile serving/java/ against the frontend jar and write the agent jar (atomically)."""
    javac = shutil.which("javac")
    if javac is None:
        raise BatcherBuildError("javac is not on the PATH: install a JDK 17 (Debian: apt-get install "
                                "openjdk-17-jdk-headless; make batcher does so)")
    frontend = frontend or frontend_jar()
    digests = upstream_digests(frontend, sorted(UPSTREAM))
    if digests != UPSTREAM:
        raise BatcherBuildError(f"{frontend} is not TorchServe 0.12.0's frontend, which serving/java/Model.java "
                                f"replaces (classes {digests}, expected {UPSTREAM}): port the change in its "
                                "pollBatch to that version's Model.java (serving/java/README.md)")
    with tempfile.TemporaryDirectory(prefix="batcher-") as tmp:
        classes = Path(tmp) / "classes"
        compiled = subprocess.run([javac, "--release", "8", "-nowarn", "-Xlint:-options", "-encoding", "UTF-8",
                                   "-cp", str(frontend), "-d", str(classes), *map(str, sources())],
                                  capture_output=True, text=True)
        if compiled.returncode != 0:
            raise BatcherBuildError(f"javac failed on serving/java/:\n{compiled.stdout}{compiled.stderr}")
        replaced = sorted(str(path.relative_to(classes).with_suffix("")) for path in
                          (classes / REPLACED_PACKAGE).glob("*.class"))
        if replaced != sorted(UPSTREAM):
            raise BatcherBuildError(f"serving/java/ compiled to {replaced}, but UPSTREAM records {sorted(UPSTREAM)}")
        jar.parent.mkdir(parents=True, exist_ok=True)
        partial = jar.with_suffix(".partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as out:
            out.writestr("META-INF/MANIFEST.MF", f"Manifest-Version: 1.0\nPremain-Class: {AGENT_CLASS}\n"
                                                 "Created-By: serving/batcher.py\n\n")
            for path in sorted(classes.rglob("*.class")):
                name = str(path.relative_to(classes))
                out.write(path, REPLACEMENT_DIR + name if name.startswith(REPLACED_PACKAGE) else name)
            out.writestr(REPLACED, "".join(f"{name}={digest}\n" for name, digest in digests.items()))
        os.replace(partial, jar)
    return jar


def main(argv=None) -> int:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    try:
        jar = build()
    except BatcherBuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {jar}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
