#!/usr/bin/env python3
"""Print the image build's options that give pip inside the build this host's pip configuration.

    python3 docker/pip_build_args.py --variant cpu      # -> --build-arg ... --secret ...

Where the host reaches PyPI through a mirror or a proxy with its own CA, or keeps wheels on local
disk, a build with pip's defaults fails (unknown host, certificate errors, no such torch). This
reads the host's pip settings (`pip config list`, then PIP_* environment variables, which win, as
for pip) and turns each into something the build can use without keeping it in the image:

- index-url, extra-index-url (http/https only), trusted-host, timeout: build arguments the
  Dockerfile's python-env stage declares (pip reads them from the environment; that stage is not
  part of the image);
- cert: the build secret "pip-cert" (mounted for the pip step only, never in a layer);
- find-links folders on local disk: the torch wheel for this variant found there is hard-linked
  (or copied) into docker/wheels/, which the build offers to pip through a bind mount; with it
  there, TORCH_INDEX=none (no need to reach PyTorch's index);
- file:// indexes cannot be reached from the build: left out, and said so on stderr.

Printed on one line, ready for `podman build` / `docker build` (make docker DOCKER_BUILD_ARGS=...).
Standard library and the pip next to this Python only.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent


def pip_settings(python: str) -> dict[str, str]:
    """{option: value} from `pip config list` (any scope; later lines win), then PIP_* variables."""
    settings: dict[str, str] = {}
    result = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60)
    for line in result.stdout.splitlines():
        match = re.match(r"^[^.]+\.([a-z-]+)='(.*)'$", line.strip())
        if match:
            settings[match.group(1)] = match.group(2)
    for name, value in os.environ.items():
        if name.startswith("PIP_"):
            settings[name[4:].lower().replace("_", "-")] = value
    return settings


def torch_wheels(folder: Path, version: str, variant: str) -> list[Path]:
    """torch wheels for this version and variant in a find-links folder."""
    if variant == "cpu":
        pattern = re.compile(rf"^torch-{re.escape(version)}\+cpu-.*\.whl$")
    else:  # a CUDA build: PyPI's plain version or a +cuXYZ local version, never +cpu
        pattern = re.compile(rf"^torch-{re.escape(version)}(\+cu\d+)?-.*\.whl$")
    return sorted(p for p in folder.glob("torch-*.whl") if pattern.match(p.name))


def link_into(wheel: Path, wheels_dir: Path) -> None:
    target = wheels_dir / wheel.name
    if target.exists() and target.stat().st_size == wheel.stat().st_size:
        return
    target.unlink(missing_ok=True)
    try:
        os.link(wheel, target)
    except OSError:  # another file system
        shutil.copy2(wheel, target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=("cpu", "cuda"), required=True)
    parser.add_argument("--torch-version", required=True)
    parser.add_argument("--wheels-dir", type=Path, default=ROOT / "docker" / "wheels")
    parser.add_argument("--python", default=sys.executable, help="the Python whose pip configuration is read")
    args = parser.parse_args()

    settings = pip_settings(args.python)
    out: list[str] = []

    def build_arg(name: str, value: str) -> None:
        out.extend(["--build-arg", f"{name}={value}"])

    def remote(urls: str, what: str) -> list[str]:
        kept = []
        for url in urls.split():
            if urlparse(url).scheme in ("http", "https"):
                kept.append(url)
            else:
                print(f"pip_build_args: {what} {url} is on this host's disk, not reachable from the build: left out",
                      file=sys.stderr)
        return kept

    if "index-url" in settings:
        kept = remote(settings["index-url"], "index-url")
        if kept:
            build_arg("PIP_INDEX_URL", kept[0])
    if "extra-index-url" in settings:
        kept = remote(settings["extra-index-url"], "extra-index-url")
        if kept:
            build_arg("PIP_EXTRA_INDEX_URL", " ".join(kept))
    if settings.get("trusted-host"):
        build_arg("PIP_TRUSTED_HOST", settings["trusted-host"])
    timeout = settings.get("default-timeout") or settings.get("timeout")
    if timeout:
        build_arg("PIP_DEFAULT_TIMEOUT", timeout)
    cert = settings.get("cert")
    if cert and Path(cert).is_file():
        out.extend(["--secret", f"id=pip-cert,src={Path(cert).resolve()}"])

    found = []
    for entry in settings.get("find-links", "").split():
        folder = Path(entry[len("file://"):] if entry.startswith("file://") else entry)
        if folder.is_dir():
            found += torch_wheels(folder, args.torch_version, args.variant)
    args.wheels_dir.mkdir(parents=True, exist_ok=True)
    for stale in args.wheels_dir.glob("*.whl"):  # a wheel left by an earlier build of the other variant
        if stale.name not in {w.name for w in found}:
            stale.unlink()
    for wheel in found:
        link_into(wheel, args.wheels_dir)
    if found:
        build_arg("TORCH_INDEX", "none")
        print(f"pip_build_args: {', '.join(w.name for w in found)} from this host's find-links, "
              f"offered to the build through {args.wheels_dir}", file=sys.stderr)
    print(shlex.join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
