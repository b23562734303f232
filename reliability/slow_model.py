"""TEST ONLY: build `lenet5_slow.mar`, LeNet-5 served by reliability/slow_handler.py.

    python -m reliability.slow_model [--store build/reliability/store] [--response-timeout 2]

writes lenet5_slow.mar beside links to model_store/'s archives (the launcher loads them all).

The archive holds the real exported LeNet-5 and the production handler code (pipeline/archive.py
lays them out), plus the slow handler, and a model-config.yaml equal to LeNet-5's except for
`responseTimeout` (short, so a test can exceed it in seconds). Tests use it for the
responseTimeout, overload and shutdown-with-requests-in-flight cases.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.archive import ARCHIVE_VERSION, stage
from handlers.limits import LIMITS
from pipeline.model_config import SERVING

REPO = Path(__file__).resolve().parent.parent
HANDLER = REPO / "reliability" / "slow_handler.py"
BASE_MODEL = "lenet5"
NAME = "lenet5_slow"


def build(store: Path, response_timeout_s: int = 2, artifacts: Path = REPO / "artifacts",
          build_dir: Path = REPO / "build" / "reliability") -> Path:
    """Write <store>/lenet5_slow.mar and return its path."""
    model_file = artifacts / BASE_MODEL / "model.pt"
    if not model_file.is_file():
        raise FileNotFoundError(f"{model_file} is missing: run `make export` (make test builds it)")
    extra, config = stage(BASE_MODEL, artifacts, build_dir)
    settings = SERVING[BASE_MODEL].model_config(LIMITS)
    settings["responseTimeout"] = response_timeout_s
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    store.mkdir(parents=True, exist_ok=True)
    archiver = Path(sys.executable).parent / "torch-model-archiver"
    command = [str(archiver), "--model-name", NAME, "--version", ARCHIVE_VERSION,
               "--serialized-file", str(model_file), "--handler", str(HANDLER),
               "--extra-files", str(extra), "--config-file", str(config),
               "--export-path", str(store), "--force"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"torch-model-archiver failed for {NAME}:\n{result.stderr or result.stdout}")
    return store / f"{NAME}.mar"


def store_with_slow_model(store: Path, model_store: Path = REPO / "model_store", response_timeout_s: int = 2) -> dict:
    """A model store holding the served archives (linked from `model_store`) and lenet5_slow.mar;
    returns the launcher's `extra` settings that load all of them."""
    missing = [n for n in SERVING if not (model_store / f"{n}.mar").is_file()]
    if missing:
        raise FileNotFoundError(f"no archive for {', '.join(missing)} in {model_store}: run `make archive`")
    store.mkdir(parents=True, exist_ok=True)
    for name in SERVING:
        link = store / f"{name}.mar"
        link.unlink(missing_ok=True)
        link.symlink_to((model_store / f"{name}.mar").resolve())
    build(store, response_timeout_s, build_dir=store.parent / f"{store.name}-staging")
    return {"load_models": ",".join(f"{n}.mar" for n in [*SERVING, NAME])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=REPO / "build" / "reliability" / "store")
    parser.add_argument("--response-timeout", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        store_with_slow_model(args.store, response_timeout_s=args.response_timeout)
        print(f"{args.store}: {', '.join(sorted(p.name for p in args.store.glob('*.mar')))}")
    except (FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
