"""The benchmark's server variants: a model store per variant under build/bench/.

Each store holds every served model (the launcher loads and waits for all of them) with the
real archives for the others and a variant of the benchmarked model's archive:
- "handler": model_store/ as `make archive` built it (our handler, settings/model_serving.py);
  "proxied" serves the same store behind nginx (loadtest/bench/servers.py);
- "noop":   loadtest/noop_handler.py with the same model-config.yaml (batching, workers, limits);
- "batch1": our handler and model with batchSize 1, everything else as in model_config.py;
- any other ModelServing (the tuning sweep): our handler with those settings.
Each is built by export/archive.py's build_archive (errors: its ArchiveError).
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from export import artifacts
from export.archive import HANDLER, build_archive, require_archives
from settings.limits import LIMITS
from settings.model_serving import SERVING, ModelServing

ROOT = Path(__file__).resolve().parent.parent
MODEL_STORE = ROOT / "model_store"
BUILD = ROOT / "build" / "bench"
NOOP_HANDLER = Path(__file__).resolve().parent / "noop_handler.py"



def variant_store(variant: str, model: str, serving: ModelServing | None = None, build: Path = BUILD) -> Path:
    """Build (or rebuild) the store of one variant under `build` and return its path."""
    require_archives(MODEL_STORE)
    if variant in ("handler", "proxied"):  # proxied: the same store behind nginx
        return MODEL_STORE
    base = SERVING[model]
    if variant == "batch1":
        serving = dataclasses.replace(base, batch_size=1)
    elif variant == "noop":
        serving = base
    elif serving is None:
        raise ValueError(f"unknown variant {variant!r}: expected handler, noop, batch1, or a ModelServing")
    work = Path(build) / variant
    store = work / "store"
    if work.exists():
        shutil.rmtree(work)
    store.mkdir(parents=True)
    for other in SERVING:
        if other != model:
            shutil.copy2(MODEL_STORE / f"{other}.mar", store / f"{other}.mar")
    config = serving.model_config(LIMITS)
    if variant == "noop":  # the handler alone: no model, no packages
        build_archive(name=model, handler=NOOP_HANDLER, store=store, model_config=config, packages=(),
                      staging=work / "staging")
    else:
        build_archive(name=model, handler=HANDLER, store=store, model_config=config,
                      model_file=artifacts.path(model, "model.pt"),
                      files={"model_meta.json": artifacts.path(model, "manifest.json")}, staging=work / "staging")
    return store
