"""What each archive's model-config.yaml tells TorchServe: batching, timeout, threads, limits.

Written into every archive by export/archive.py; the handler reads its section back at initialize.
One line per value with the measurement behind it: `make bench-tune` on the 2-core development
machine, lenet5 with real held-out PNGs, variants interleaved in one run (figures in BENCHMARKS.md).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from settings.limits import InputLimits


@dataclass(frozen=True)
class ModelServing:
    # 2 workers on 2 CPUs, 16 / 64 clients (make bench-tune, 2026-11-26): 16 -> 2,275 / 4,057 req/s; 8 -> 2,765 /
    # 3,197 (two half batches at 16 clients, too many small ones at 64); 32 -> 2,124 / 4,081; 64 -> 2,230 / 3,793.
    batch_size: int = 16
    # Waited only by TorchServe's own batcher: ours (serving/batcher.py, in every server we start) never waits, a
    # batch is the jobs queued when a worker is free (1 / 16 / 64 clients 788 / 2,826 / 4,386 req/s, theirs at 1 ms
    # 420 / 2,388 / 4,384; make bench-tune TUNE='handler handler+upstream', 2026-11-26). For theirs: 1 ms beat 2 ms
    # at 1 client (349 vs 248 req/s), and 0 becomes 100 ms in TorchServe (9 req/s, p50 104 ms).
    max_batch_delay_ms: int = 1
    # None: not in the archive, so the server sets it where it starts, from its CPUs (serving/workers.py;
    # the same archive on CPU and GPU pods). A number pins it in the archive (make bench-tune's variants).
    workers: int | None = None
    # a batch of 16 small images takes milliseconds: 30 s only catches a stuck worker, which TorchServe restarts.
    response_timeout_s: int = 30
    # a second intra-op thread made one worker slower (16 clients 2,789 vs 3,816 req/s): the frontend needs the core.
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


def missing_archives(store: Path, models: Iterable[str] = SERVING) -> list[str]:
    """The served models without <store>/<model>.mar."""
    return [name for name in models if not (Path(store) / f"{name}.mar").is_file()]
