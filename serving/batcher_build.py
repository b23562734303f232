"""Build the frontend's batcher, a Java agent: serving/java/ -> serving/java/build/tinyserve-batcher.jar.

    python -m serving.batcher_build    # make batcher

The agent rewrites two classes of TorchServe 0.12.0's frontend as it loads them (Model.pollBatch and
WorkerThread.run, serving/java/*Rewrite.java, with ASM); serving/java/README.md says what and why. The
build first checks that the installed frontend's classes are the ones the rewrites were written for
(UPSTREAM), then compiles serving/java/ (javac --release 8, the frontend's own class version) against
Debian's ASM (libasm-java) and writes one jar: our classes, ASM's classes and its copyright notice
(the frontend's JVM loads the agent from this jar alone), and upstream.properties, the digests the
agent checks at start-up before it changes anything.

Only `make batcher` runs this; what serving needs at run time is serving/batcher.py.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from serving.batcher import AGENT_CLASS, AGENT_JAR, SOURCES, BatcherBuildError

UPSTREAM_FILE = "upstream.properties"  # BatcherAgent.UPSTREAM
# Debian's libasm-java (make batcher installs it): ASM's core classes and the copyright notice that
# travels with them.
ASM_JAR = Path("/usr/share/java/asm.jar")
ASM_COPYRIGHT = Path("/usr/share/doc/libasm-java/copyright")
ASM_PACKAGE = "org/objectweb/asm/"


@dataclass(frozen=True)
class Upstream:
    """The classes the agent rewrites, as the TorchServe release they were written for ships them."""
    torchserve: str
    classes: dict[str, str]  # internal name -> SHA-256 of its class file


# TorchServe 0.12.0's model-server.jar. Another frontend fails the build: port the rewrites first.
UPSTREAM = Upstream("0.12.0", {
    "org/pytorch/serve/wlm/Model": "7c5523f1fe77fe79aa32665469e17725e70518692abcf4987989ef72f10d4cff",
    "org/pytorch/serve/wlm/WorkerThread": "5292f5b79ac1ec509876cd997e2605848fd79f0b15b24ebd1a96c9c6b035ffd6",
})


def frontend_jar() -> Path:
    """TorchServe's frontend (ts/frontend/model-server.jar) in this Python's environment."""
    import ts  # noqa: PLC0415 (the serving venv's TorchServe, only when building)

    jar = Path(ts.__file__).resolve().parent / "frontend" / "model-server.jar"
    if not jar.is_file():
        raise BatcherBuildError(f"TorchServe's frontend jar is not at {jar}: reinstall torchserve (make venv)")
    return jar


def class_digest(frontend: Path, class_name: str) -> str:
    """SHA-256 of one class (internal name) in a frontend jar."""
    with zipfile.ZipFile(frontend) as jar:
        try:
            return hashlib.sha256(jar.read(f"{class_name}.class")).hexdigest()
        except KeyError:
            raise BatcherBuildError(f"{frontend} has no {class_name}: the agent rewrites TorchServe "
                                    f"{UPSTREAM.torchserve}'s; this TorchServe is another version") from None


def require_upstream(frontend: Path) -> None:
    """BatcherBuildError unless the frontend's classes are the ones the rewrites were written for."""
    for name, expected in UPSTREAM.classes.items():
        found = class_digest(frontend, name)
        if found != expected:
            raise BatcherBuildError(
                f"{frontend} is not TorchServe {UPSTREAM.torchserve}'s frontend, whose classes the agent "
                f"rewrites ({name} sha256 {found}, expected {expected}): port the rewrites in serving/java/ "
                "to that version and record its digests in UPSTREAM (serving/java/README.md, Upgrading TorchServe)")


def tools() -> tuple[str, Path]:
    """javac and ASM's jar, or BatcherBuildError saying what to install."""
    javac = shutil.which("javac")
    if javac is None:
        raise BatcherBuildError("javac is not on the PATH: install a JDK 17 (Debian: apt-get install "
                                "openjdk-17-jdk-headless; make batcher does so)")
    if not ASM_JAR.is_file() or not ASM_COPYRIGHT.is_file():
        raise BatcherBuildError(f"ASM is not at {ASM_JAR}: install Debian's libasm-java (apt-get install "
                                "libasm-java; make batcher does so)")
    return javac, ASM_JAR


def build(jar: Path = AGENT_JAR, frontend: Path | None = None) -> Path:
    """Check the frontend, compile serving/java/ and write the agent jar (atomically)."""
    javac, asm = tools()
    require_upstream(frontend or frontend_jar())
    with tempfile.TemporaryDirectory(prefix="batcher-") as tmp:
        classes = Path(tmp) / "classes"
        compiled = subprocess.run([javac, "--release", "8", "-nowarn", "-Xlint:-options", "-encoding", "UTF-8",
                                   "-cp", str(asm), "-d", str(classes), *map(str, sorted(SOURCES.glob("*.java")))],
                                  capture_output=True, text=True)
        if compiled.returncode != 0:
            raise BatcherBuildError(f"javac failed on serving/java/:\n{compiled.stdout}{compiled.stderr}")
        jar.parent.mkdir(parents=True, exist_ok=True)
        partial = jar.with_suffix(".partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as out:
            out.writestr("META-INF/MANIFEST.MF", f"Manifest-Version: 1.0\nPremain-Class: {AGENT_CLASS}\n"
                                                 "Created-By: serving/batcher_build.py\n\n")
            for path in sorted(classes.rglob("*.class")):
                out.write(path, str(path.relative_to(classes)))
            with zipfile.ZipFile(asm) as library:
                for name in library.namelist():
                    if name.startswith(ASM_PACKAGE) and name.endswith(".class"):
                        out.writestr(name, library.read(name))
            out.write(ASM_COPYRIGHT, "META-INF/asm/copyright")
            out.writestr(UPSTREAM_FILE, f"torchserve={UPSTREAM.torchserve}\n" + "".join(
                f"sha256.{name}={digest}\n" for name, digest in UPSTREAM.classes.items()))
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
