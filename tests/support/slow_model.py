"""TEST ONLY: build `lenet5_slow.mar`, LeNet-5 served by tests/support/slow_handler.py.

    python -m tests.support.slow_model [--store build/reliability/store] [--response-timeout 2]

writes lenet5_slow.mar beside links to model_store/'s archives (the launcher loads them all).

The archive holds the real exported LeNet-5 and the production handler code (export/archive.py
lays them out), plus the slow handler, and a model-config.yaml equal to LeNet-5's except for
`responseTimeout` (short, so a test can exceed it in seconds). Tests use it for the
responseTimeout, overload and shutdown-with-requests-in-flight cases.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from export.archive import ArchiveError, build_archive, require_archives
from settings.limits import LIMITS
from settings.model_serving import SERVING
from tests.support.paths import ARTIFACTS, MODEL_STORE, REPO

HANDLER = Path(__file__).resolve().with_name("slow_handler.py")
BASE_MODEL = "lenet5"
NAME = "lenet5_slow"


def build(store: Path, response_timeout_s: int = 2, artifacts: Path = ARTIFACTS,
          build_dir: Path = REPO / "build" / "reliability", max_batch_delay_ms: int | None = None) -> Path:
    """Write <store>/lenet5_slow.mar and return its path (`max_batch_delay_ms`: instead of LeNet-5's)."""
    settings = SERVING[BASE_MODEL].model_config(LIMITS)
    settings["responseTimeout"] = response_timeout_s
    if max_batch_delay_ms is not None:
        settings["maxBatchDelay"] = max_batch_delay_ms
    return build_archive(name=NAME, handler=HANDLER, store=store, model_config=settings,
                         model_file=artifacts / BASE_MODEL / "model.pt",
                         files={"model_meta.json": artifacts / BASE_MODEL / "manifest.json"},
                         staging=build_dir / BASE_MODEL)


def store_with_slow_model(store: Path, model_store: Path = MODEL_STORE, response_timeout_s: int = 2,
                          max_batch_delay_ms: int | None = None) -> dict:
    """A model store holding the served archives (linked from `model_store`) and lenet5_slow.mar;
    returns the launcher's `extra` settings that load all of them, one worker each."""
    require_archives(model_store)
    store.mkdir(parents=True, exist_ok=True)
    for name in SERVING:
        link = store / f"{name}.mar"
        link.unlink(missing_ok=True)
        link.symlink_to((model_store / f"{name}.mar").resolve())
    build(store, response_timeout_s, build_dir=store.parent / f"{store.name}-staging", max_batch_delay_ms=max_batch_delay_ms)
    # one worker per model, whatever the CPUs: a fault the tests inject hits the model's only worker
    return {"load_models": ",".join(f"{n}.mar" for n in [*SERVING, NAME]), "default_workers_per_model": "1"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=REPO / "build" / "reliability" / "store")
    parser.add_argument("--response-timeout", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        store_with_slow_model(args.store, response_timeout_s=args.response_timeout)
        print(f"{args.store}: {', '.join(sorted(p.name for p in args.store.glob('*.mar')))}")
    except ArchiveError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
