"""docker/Dockerfile read as the tests check it: instructions with continuation lines joined, ARG
defaults, ENV values, stages and COPY sources.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from tests.support.paths import REPO as ROOT

DOCKERFILE = ROOT / "docker" / "Dockerfile"


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        keyword, _, rest = current.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        current = ""
    return instructions


def read_dockerfile() -> dict:
    """{"instructions": [(INSTRUCTION, arguments)], "args": {ARG: default}, "env": {ENV: value}}."""
    instructions = dockerfile_instructions(DOCKERFILE.read_text())
    args = {}
    for keyword, rest in instructions:
        if keyword == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            args.setdefault(name, value)
    env = {}
    for keyword, rest in instructions:
        if keyword == "ENV":
            for item in shlex.split(rest):
                name, value = item.split("=", 1)
                env[name] = value
    return {"instructions": instructions, "args": args, "env": env}


def last(dockerfile, keyword: str) -> str:
    values = [rest for k, rest in dockerfile["instructions"] if k == keyword]
    assert values, f"docker/Dockerfile has no {keyword}"
    return values[-1]


def copies(dockerfile) -> dict[str, str]:
    """Source path -> destination path of every COPY from the build context."""
    mapping = {}
    for keyword, rest in dockerfile["instructions"]:
        if keyword != "COPY" or "--from=" in rest:
            continue
        parts = [p for p in shlex.split(rest) if not p.startswith("--")]
        *sources, destination = parts
        for source in sources:
            target = destination + Path(source).name if destination.endswith("/") and not source.endswith("/") \
                else destination
            mapping[source.rstrip("/")] = target.rstrip("/")
    return mapping


def stage(dockerfile, name: str) -> list[tuple[str, str]]:
    """The instructions of the stage `FROM ... AS name`, that FROM excluded."""
    instructions = dockerfile["instructions"]
    start = next(i for i, (k, rest) in enumerate(instructions) if k == "FROM" and rest.endswith(f" AS {name}"))
    end = next((i for i in range(start + 1, len(instructions)) if instructions[i][0] == "FROM"), len(instructions))
    return instructions[start + 1:end]


def image_venv(dockerfile) -> str:
    """The venv the image runs: copied from the python-env stage, where it was created."""
    copied = [rest.split() for k, rest in dockerfile["instructions"] if k == "COPY" and "--from=python-env" in rest]
    assert len(copied) == 1, copied
    _, source, destination = copied[0]
    assert source == destination, copied[0]
    created = next(rest for k, rest in stage(dockerfile, "python-env") if k == "RUN" and "-m venv" in rest)
    assert re.search(rf"python3 -m venv {re.escape(source)}( |$)", created), created
    return destination


def requirement_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s#]+)", line.strip())
        if match:
            pins[match.group(1).lower()] = match.group(2)
    return pins
