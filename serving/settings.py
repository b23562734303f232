"""Every serving setting, in one place: ports, batching, workers, threads and input limits.

The local config (serving/config.py), each archive's model-config.yaml (export/archive.py), the
handler (which reads its limits from the model-config.yaml packed in the archive), the Makefile
(which only forwards overrides) and the deployment files all derive from this module; tests
hold the copies together.

Why each value is what it is:
- batch_size 16, max_batch_delay_ms 5: on 2 CPU cores one LeNet-5 worker went from 517 req/s
  (batch 1) to 1,646 req/s (batch 16, 5 ms) at 64 concurrent clients; 5 ms costs at most 5 ms of
  latency when the server is idle (../shared/notes/torchserve-facts.md).
- workers 1 and torch_threads 1 per model: two workers with default threads on two cores ran ten
  times slower than one; one intra-op thread leaves a core for the Java frontend and the client.
  On a GPU: one worker per GPU (the model is tiny, one worker saturates the copy engine first).
- response_timeout_s 30: a batch of 16 tiny images takes milliseconds; 30 s only catches a stuck
  worker, which TorchServe then restarts.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

# Local addresses. Overridable by environment (the Makefile forwards INFERENCE_PORT etc.).
HOST = "127.0.0.1"
INFERENCE_PORT = 8080
MANAGEMENT_PORT = 8081
METRICS_PORT = 8082


# TorchServe always starts gRPC servers too (no switch in 0.12); we do not use them, but their
# ports must not collide between servers, so by default they sit GRPC_OFFSET below the HTTP ones
# (8080/8081 -> 7070/7071, TorchServe's defaults), always bound to 127.0.0.1.
GRPC_OFFSET = 1010


@dataclass(frozen=True)
class Ports:
    inference: int = INFERENCE_PORT
    management: int = MANAGEMENT_PORT
    metrics: int = METRICS_PORT
    grpc_inference: int | None = None   # default: inference - GRPC_OFFSET
    grpc_management: int | None = None  # default: management - GRPC_OFFSET

    def __post_init__(self):
        if self.grpc_inference is None:
            object.__setattr__(self, "grpc_inference", self.inference - GRPC_OFFSET)
        if self.grpc_management is None:
            object.__setattr__(self, "grpc_management", self.management - GRPC_OFFSET)
        for name in ("inference", "management", "metrics", "grpc_inference", "grpc_management"):
            value = getattr(self, name)
            if not 0 < value < 65536:
                raise ValueError(f"{name} port {value} is not a TCP port (1-65535); HTTP ports must be "
                                 f"above {GRPC_OFFSET} unless GRPC_INFERENCE_PORT/GRPC_MANAGEMENT_PORT are set")
        if len({self.inference, self.management, self.metrics, self.grpc_inference, self.grpc_management}) < 5:
            raise ValueError(f"ports must all differ: {self}")

    @classmethod
    def from_env(cls, env=os.environ) -> "Ports":
        def read(name: str, default: int) -> int:
            value = env.get(name, "")
            if not value:
                return default
            if not value.isdigit() or not 0 < int(value) < 65536:
                raise ValueError(f"{name}={value!r} is not a TCP port (1-65535)")
            return int(value)

        return cls(
            inference=read("INFERENCE_PORT", INFERENCE_PORT),
            management=read("MANAGEMENT_PORT", MANAGEMENT_PORT),
            metrics=read("METRICS_PORT", METRICS_PORT),
            grpc_inference=read("GRPC_INFERENCE_PORT", 0) or None,
            grpc_management=read("GRPC_MANAGEMENT_PORT", 0) or None,
        )


@dataclass(frozen=True)
class InputLimits:
    """Bounds on what one request may carry; the handler enforces them, TorchServe the body size."""
    max_request_bytes: int = 8 * 1024 * 1024   # TorchServe max_request_size: larger bodies get 413
    max_image_pixels: int = 16_000_000         # width x height, checked from the header before decoding
    max_image_side: int = 8192                 # pixels, either side
    max_images_per_request: int = 64           # {"instances": [...]}
    max_pixels_per_request: int = 40_000_000   # all images of one request together (a worker's time)


@dataclass(frozen=True)
class ModelServing:
    batch_size: int = 16
    max_batch_delay_ms: int = 5
    workers: int = 1
    response_timeout_s: int = 30
    torch_threads: int = 1

    def model_config(self, limits: InputLimits) -> dict:
        """The model-config.yaml TorchServe reads from the archive (handler section: ours)."""
        return {
            "minWorkers": self.workers,
            "maxWorkers": self.workers,
            "batchSize": self.batch_size,
            "maxBatchDelay": self.max_batch_delay_ms,
            "responseTimeout": self.response_timeout_s,
            "handler": {"torch_threads": self.torch_threads, **asdict(limits)},
        }


LIMITS = InputLimits()
JOB_QUEUE_SIZE = 256  # requests queued per model before TorchServe answers 503
SERVING: dict[str, ModelServing] = {
    "lenet5": ModelServing(),
    "mnist_net": ModelServing(),
    "fashion_mlp": ModelServing(),
}
