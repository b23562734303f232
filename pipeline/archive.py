"""Package each exported model with torch-model-archiver into model_store/<name>.mar.

    python -m pipeline.archive [--models ...] [--artifacts artifacts] [--store model_store]

An archive holds: model.pt (TorchScript), the handler (handlers/classifier_handler.py) with the
packages it imports (handlers/ and model_defs/, whole), model_meta.json
(the export manifest: input size, labels, preprocessing, sha256) and model-config.yaml
(batching, workers, timeouts, input limits and torch threads from serving/settings.py).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from model_defs.registry import MODELS
from handlers.limits import LIMITS
from pipeline.model_config import SERVING

REPO = Path(__file__).resolve().parent.parent
HANDLER = REPO / "handlers" / "classifier_handler.py"
# The packages the handler imports at serving time, copied whole into the archive (the layers
# below the handler: tests/test_layers.py holds that they import nothing above them).
RUNTIME_PACKAGES = ("handlers", "model_defs")
ARCHIVE_VERSION = "1.0"


def stage(name: str, artifacts: Path, build: Path) -> tuple[Path, Path]:
    """Lay out the extra files and model-config.yaml of one archive under build/."""
    extra = build / name / "extra"
    if extra.exists():
        shutil.rmtree(extra)
    for package in RUNTIME_PACKAGES:
        shutil.copytree(REPO / package, extra / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.md"))
    shutil.copy2(artifacts / name / "manifest.json", extra / "model_meta.json")
    config = build / name / "model-config.yaml"
    config.write_text(yaml.safe_dump(SERVING[name].model_config(LIMITS), sort_keys=False))
    return extra, config


def archive(name: str, artifacts: Path, store: Path, build: Path) -> Path:
    model_file = artifacts / name / "model.pt"
    if not model_file.is_file() or not (artifacts / name / "manifest.json").is_file():
        raise FileNotFoundError(f"{model_file} or its manifest.json is missing: run `make export` first")
    extra, config = stage(name, artifacts, build)
    store.mkdir(parents=True, exist_ok=True)
    archiver = Path(sys.executable).parent / "torch-model-archiver"
    command = [
        str(archiver), "--model-name", name, "--version", ARCHIVE_VERSION,
        "--serialized-file", str(model_file), "--handler", str(HANDLER),
        "--extra-files", str(extra), "--config-file", str(config),
        "--export-path", str(store), "--force",
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"torch-model-archiver failed for {name}:\n{result.stderr or result.stdout}")
    return store / f"{name}.mar"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--store", type=Path, default=Path("model_store"))
    parser.add_argument("--build", type=Path, default=Path("build/archive"))
    args = parser.parse_args(argv)
    for name in args.models:
        try:
            path = archive(name, args.artifacts, args.store, args.build)
        except (FileNotFoundError, RuntimeError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"{name}: {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
