"""What each archive's model-config.yaml tells TorchServe: batching, timeout, threads, limits.

Written into every archive by export/archive.py; the handler reads its section back at initialize.
Why each value, with the runs behind it: settings/README.md.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from settings.limits import InputLimits


@dataclass(frozen=True)
class ModelServing:
    # the best of 8-64 at 16 and 64 clients: 8 splits batches at 16 clients, 32 and 64 gain nothing
    batch_size: int = 16
    # waited only by TorchServe's own batcher (ours never waits); 0 would mean 100 ms in TorchServe
    max_batch_delay_ms: int = 1
    # None: the server sizes workers from the CPUs where it starts (serving/workers.py); a number pins it
    workers: int | None = None
    # a batch takes milliseconds: this only catches a stuck worker, which TorchServe then restarts
    response_timeout_s: int = 30
    # a second intra-op thread slows a worker: the frontend needs the other core
    torch_threads: int = 1

    def model_config(self, limits: InputLimits) -> dict:
        """The model-config.yaml TorchServe reads from the archive (handler section: ours)."""
        workers = {} if self.workers is None else {"minWorkers": self.workers, "maxWorkers": self.workers}
        return {
            **workers,
            "batchSize": self.batch_size,
            "maxBatchDelay": self.max_batch_delay_ms,
            "responseTimeout": self.response_timeout_s,
            "handler": {"torch_threads": self.torch_threads, **asdict(limits)},
        }


SERVING: dict[str, ModelServing] = {
    "lenet5": ModelServing(),
    "mnist_net": ModelServing(),
    "fashion_mlp": ModelServing(),
}


def missing_archives(store: Path, models: Iterable[str] = SERVING) -> str | None:
    """None when `store` holds <model>.mar for each served model, else which are missing and what to do."""
    missing = [name for name in models if not (Path(store) / f"{name}.mar").is_file()]
    return f"no archive for {', '.join(missing)} in {store}: run `make archive` first." if missing else None
