"""Every serving setting, in one place: ports, batching, workers, threads and input limits.

The local config (serving/config.py), each archive's model-config.yaml (export/archive.py), the
handler (which reads its limits from the model-config.yaml packed in the archive), the Makefile
(which only forwards overrides) and the deployment files all derive from this module; tests
hold the copies together.

Why each value is what it is. Measured on the 2-core development machine on 2026-11-25 with
`make bench-tune BENCH_ARGS="--rounds 2 --duration 4"` (loadtest/bench.py): lenet5, real
held-out PNGs, one per request, every variant served at once and interleaved in one run (the
machine is shared, so only ratios within a run count); the table is in the notes of
BENCHMARKS.md. TorchServe itself (no-op handler) costs ~110 us of CPU per request and serves
~15,600 req/s at 64 clients; our worker spends ~257 us per request, of which ~116 us are the
handler's own stages (`make bench-stages`: canonicalising 55, forward pass 29, decoding 23, JSON 8)
and the rest TorchServe's worker protocol and metrics.
- torch_threads 1 per worker: a second intra-op thread made one worker slower, not faster (16
  clients 2,789 vs 3,816 req/s, p99 17.8 vs 8.6 ms; 64 clients the same), because the forward
  pass is a fraction of the worker's time and the Java frontend and the clients need the other
  core; two workers with torch's default threads on two cores ran ten times slower than one
  (../shared/notes/torchserve-facts.md). On a GPU the forward pass leaves the CPU anyway.
- batch_size 16: batch 32 served 10% more at 64 clients (4,548 vs 4,140 req/s) but 31% less at
  16 (2,631 vs 3,816), where 16 fills a batch without waiting and 32 always waits for the delay
  below; batch 1 serves a third (BENCHMARKS.md, row 4).
- max_batch_delay_ms 2: TorchServe holds a batch that is not full for this long, which is pure
  latency when few requests are in flight: one client got 322 req/s, p50 2.9 ms with 2 ms against
  161 req/s, p50 6.1 ms with 5 ms; at 16 and 64 clients batches fill before the delay ends and
  throughput was the same (3,816 vs 3,697, 4,140 vs 4,115 req/s).
- workers 1 per model: two workers of one thread each served 60% more at 64 clients (6,604 vs
  4,140 req/s; nothing at 16 or fewer): one worker is the bottleneck, and its Python runs on one
  core. Not the default: the same archive serves the GPU image, where the rule is one
  worker per GPU (each more would add a CUDA context, and the GPU is not the bottleneck), and
  the three models' workers already share a small CPU pod's cores. A CPU-only deployment that
  sees one model take most of the traffic should raise it to the pod's cores.
- logging: the container's docker/log4j2.xml (no per-request lines) against TorchServe's own
  (several lines per request to files): 4,140 vs 3,970 req/s at 64 clients.
- response_timeout_s 30: a batch of 16 tiny images takes milliseconds; 30 s only catches a stuck
  worker, which TorchServe then restarts.
- JOB_QUEUE_SIZE 256 per model: 16 batches ahead, about 60 ms of waiting at the ~4,100 req/s one
  worker serves here; past it TorchServe answers 503 at once, which tells a client or the ingress
  to retry elsewhere, instead of latencies growing without bound.
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
    max_images_per_explanation: int = 16       # /explanations/ costs the worker 1.0-1.5 ms per image (gradient x input, 2 PNGs, JSON; predictions 0.15-0.5, BENCHMARKS.md): 16 = ~25 ms
    # Decoding-cost limits, checked from the file's framing before decoding (handlers/image_decoding.py):
    # no file within the limits above should cost a worker more than ~0.5 s of CPU to decode. CPU
    # times from `python -m reliability.crafted [--raw]` on the 2-core development machine (RELIABILITY.md).
    max_jpeg_segments: int = 2_000        # Pillow walks markers in Python: 2M empty COMs (8 MB) cost 1.5 s; real files have < 50
    max_jpeg_scans: int = 100             # libjpeg progressive writes 10 scans; 20,000 repeated scans of 4000x4000 cost 19 s
    max_jpeg_scan_blocks: int = 40_000_000  # ~4 ns per block per scan (19.4 s / (20,000 x 250,000)): 40M = 0.16 s; 10 scans of 4000x4000 4:4:4 visit 3.5M
    max_png_chunks: int = 20_000          # ~1.8 us per chunk in Pillow (500k IDATs: 0.91 s): 20k = 40 ms; 8 MB in 8 KB IDATs is 1,000
    max_gif_blocks: int = 20_000          # ~0.19 us per sub-block before the first image (4M: 0.76 s): 20k = 4 ms, 5 MB of comments
    max_tiff_tags: int = 1_000            # entries of the first IFD, each parsed in Python; real files have < 100
    max_tiff_tiles: int = 16_384          # ~3.5 us per uncompressed strip/tile (1M 4x4 tiles: 3.5 s): 16k = 57 ms; 4000 one-row strips pass
    max_bmp_rle_bytes: int = 1_000_000    # Pillow's RLE decoder is Python, ~0.26 us per 2-byte run (7.3 MB: 0.95 s): 1 MB = 0.13 s


@dataclass(frozen=True)
class ModelServing:
    batch_size: int = 16
    max_batch_delay_ms: int = 2
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
