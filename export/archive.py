"""Package each exported model with torch-model-archiver into model_store/<name>.mar.

    python -m export.archive [--models ...] [--artifacts artifacts] [--store model_store]

An archive holds: model.pt (TorchScript), the handler (handlers/classifier_handler.py) with the
packages it imports (handlers/, model_defs/ and settings/, whole), model_meta.json
(the export manifest: input size, labels, preprocessing, sha256) and model-config.yaml
(batching, workers, timeouts, torch threads from settings/model_serving.py, input limits from
settings/limits.py). `build_archive` is the one caller of torch-model-archiver: the benchmark's
variants (loadtest/archives.py) and the test-only slow model (tests/support/slow_model.py) use it too.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterable

import yaml

from settings.limits import LIMITS
from settings.model_serving import SERVING, missing_archives

REPO = Path(__file__).resolve().parent.parent
HANDLER = REPO / "handlers" / "classifier_handler.py"
# The packages the handler imports at serving time, copied whole into the archive (the layers
# below the handler: import-linter, pyproject.toml, holds that they import nothing above them).
RUNTIME_PACKAGES = ("handlers", "model_defs", "settings")
ARCHIVE_VERSION = "1.0"


class ArchiveError(RuntimeError):
    """An archive is missing or could not be built; the message says why and what to do."""


def require_archives(store: Path, models: Iterable[str] = SERVING) -> None:
    """ArchiveError naming the served models that have no archive in `store`, and `make archive`."""
    problem = missing_archives(store, models)
    if problem:
        raise ArchiveError(problem)


def build_archive(*, name: str, handler: Path, store: Path, model_config: dict, model_file: Path | None = None,
                  packages: Iterable[str] = RUNTIME_PACKAGES, files: dict[str, Path] | None = None,
                  staging: Path | None = None) -> Path:
    """Write <store>/<name>.mar: `handler`, the serialized `model_file` (if any), the repository's
    `packages` whole, `files` ({name in the archive: source}) and `model_config` as model-config.yaml.
    They are laid out under `staging` (a temporary folder when None) first."""
    if model_file is not None and not Path(model_file).is_file():
        raise ArchiveError(f"{model_file} is missing: run `make export` first")
    if staging is None:
        with tempfile.TemporaryDirectory(prefix=f"archive-{name}-") as temporary:
            return build_archive(name=name, handler=handler, store=store, model_config=model_config,
                                 model_file=model_file, packages=packages, files=files, staging=Path(temporary))
    extra = staging / "extra"
    if extra.exists():
        shutil.rmtree(extra)
    extra.mkdir(parents=True)
    for package in packages:
        shutil.copytree(REPO / package, extra / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.md"))
    for target, source in (files or {}).items():
        shutil.copy2(source, extra / target)
    config = staging / "model-config.yaml"
    config.write_text(yaml.safe_dump(model_config, sort_keys=False))
    command = [str(Path(sys.executable).parent / "torch-model-archiver"), "--model-name", name,
               "--version", ARCHIVE_VERSION, "--handler", str(handler), "--config-file", str(config),
               "--export-path", str(store), "--force"]
    if model_file is not None:
        command += ["--serialized-file", str(model_file)]
    if any(extra.iterdir()):
        command += ["--extra-files", str(extra)]
    Path(store).mkdir(parents=True, exist_ok=True)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise ArchiveError(f"torch-model-archiver failed for {name}:\n{result.stderr or result.stdout}")
    return Path(store) / f"{name}.mar"


def archive(name: str, artifacts: Path, store: Path, build: Path) -> Path:
    """model_store/<name>.mar from artifacts/<name>/ (model.pt, manifest.json), staged under build/<name>/."""
    model_file, manifest = artifacts / name / "model.pt", artifacts / name / "manifest.json"
    if not model_file.is_file() or not manifest.is_file():
        raise ArchiveError(f"{model_file} or its manifest.json is missing: run `make export` first")
    return build_archive(name=name, handler=HANDLER, store=store, model_config=SERVING[name].model_config(LIMITS),
                         model_file=model_file, files={"model_meta.json": manifest}, staging=build / name)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(SERVING), choices=list(SERVING))
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--store", type=Path, default=Path("model_store"))
    parser.add_argument("--build", type=Path, default=Path("build/archive"))
    args = parser.parse_args(argv)
    for name in args.models:
        try:
            path = archive(name, args.artifacts, args.store, args.build)
        except ArchiveError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"{name}: {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
