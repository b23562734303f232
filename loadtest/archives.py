"""The benchmark's server variants: a model store per variant under build/bench/.

Each store holds every served model (the launcher loads and waits for all of them) with the
real archives for the others and a variant of the benchmarked model's archive:
- "ours":   model_store/ as `make archive` built it (our handler, serving/settings.py);
- "noop":   loadtest/noop_handler.py with the same model-config.yaml (batching, workers, limits);
- "batch1": our handler and model with batchSize 1, everything else as in settings.py;
- any other ModelServing (the tuning sweep): our handler with those settings.
"""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline import archive as ours
from handlers.limits import LIMITS
from pipeline.model_config import SERVING, ModelServing

ROOT = Path(__file__).resolve().parent.parent
MODEL_STORE = ROOT / "model_store"
ARTIFACTS = ROOT / "artifacts"
BUILD = ROOT / "build" / "bench"
NOOP_HANDLER = Path(__file__).resolve().parent / "noop_handler.py"


class ArchiveError(RuntimeError):
    """A variant could not be built; the message says why and what to do."""


def require_store() -> None:
    missing = [n for n in SERVING if not (MODEL_STORE / f"{n}.mar").is_file()]
    if missing:
        raise ArchiveError(f"no archive for {', '.join(missing)} in {MODEL_STORE}: run `make archive` first")


def _run_archiver(args: list[str], name: str) -> None:
    archiver = Path(sys.executable).parent / "torch-model-archiver"
    result = subprocess.run([str(archiver), *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise ArchiveError(f"torch-model-archiver failed for the {name} variant:\n{result.stderr or result.stdout}")


def variant_store(variant: str, model: str, serving: ModelServing | None = None, build: Path = BUILD) -> Path:
    """Build (or rebuild) the store of one variant under `build` and return its path."""
    require_store()
    if variant == "ours":
        return MODEL_STORE
    base = SERVING[model]
    if variant == "batch1":
        serving = dataclasses.replace(base, batch_size=1)
    elif variant == "noop":
        serving = base
    elif serving is None:
        raise ValueError(f"unknown variant {variant!r}: expected ours, noop, batch1, or a ModelServing")
    work = Path(build) / variant
    store = work / "store"
    if work.exists():
        shutil.rmtree(work)
    store.mkdir(parents=True)
    for other in SERVING:
        if other != model:
            shutil.copy2(MODEL_STORE / f"{other}.mar", store / f"{other}.mar")
    config = work / "model-config.yaml"
    config.write_text(yaml.safe_dump(serving.model_config(LIMITS), sort_keys=False))
    common = ["--model-name", model, "--version", ours.ARCHIVE_VERSION, "--config-file", str(config),
              "--export-path", str(store), "--force"]
    if variant == "noop":
        _run_archiver([*common, "--handler", str(NOOP_HANDLER)], variant)
    else:
        model_file = ARTIFACTS / model / "model.pt"
        if not model_file.is_file():
            raise ArchiveError(f"{model_file} is missing: run `make export` first")
        extra, _ = ours.stage(model, ARTIFACTS, work / "staging")
        _run_archiver([*common, "--handler", str(ours.HANDLER), "--serialized-file", str(model_file),
                       "--extra-files", str(extra)], variant)
    return store
