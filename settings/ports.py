"""Server-wide settings: addresses, ports and the job queue. Per-model settings (batching, workers,
threads) travel inside each archive: settings/model_serving.py; input limits: settings/limits.py.

The local config (serving/config.py), the Makefile (which only forwards port overrides) and the
deployment files derive from this module; tests hold the copies together.
"""
from __future__ import annotations

import os
import socket
from contextlib import ExitStack
from dataclasses import dataclass, fields

# Local addresses. Overridable by environment (the Makefile forwards INFERENCE_PORT etc.).
HOST = "127.0.0.1"
INFERENCE_PORT = 8080
MANAGEMENT_PORT = 8081
METRICS_PORT = 8082


# TorchServe always starts gRPC servers too (no switch in 0.12); we do not use them, but their
# ports must not collide between servers, so by default they sit GRPC_OFFSET below the HTTP ones
# (8080/8081 -> 7070/7071, TorchServe's defaults), always bound to 127.0.0.1.
GRPC_OFFSET = 1010

# TorchServe's own inference and metrics listeners sit behind the reverse proxy (serving/proxy.py),
# on 127.0.0.1 only, BACKEND_OFFSET above the public ports the proxy listens on (8080 -> 8085,
# 8082 -> 8087). Below 10, so the tools' --port-base layout (a server every 10 ports) stays apart.
BACKEND_OFFSET = 5


@dataclass(frozen=True)
class Ports:
    inference: int = INFERENCE_PORT
    management: int = MANAGEMENT_PORT
    metrics: int = METRICS_PORT
    grpc_inference: int | None = None   # default: inference - GRPC_OFFSET
    grpc_management: int | None = None  # default: management - GRPC_OFFSET
    backend_inference: int | None = None  # TorchServe's inference behind the proxy; default inference + BACKEND_OFFSET
    backend_metrics: int | None = None    # TorchServe's metrics behind the proxy; default metrics + BACKEND_OFFSET

    def __post_init__(self):
        defaults = {"grpc_inference": self.inference - GRPC_OFFSET,
                    "grpc_management": self.management - GRPC_OFFSET,
                    "backend_inference": self.inference + BACKEND_OFFSET,
                    "backend_metrics": self.metrics + BACKEND_OFFSET}
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        numbers = [getattr(self, f.name) for f in fields(self)]
        for f, value in zip(fields(self), numbers):
            if not 0 < value < 65536:
                raise ValueError(f"{f.name} port {value} is not a TCP port (1-65535); HTTP ports must be "
                                 f"above {GRPC_OFFSET} unless GRPC_INFERENCE_PORT/GRPC_MANAGEMENT_PORT are set")
        if len(set(numbers)) < len(numbers):
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
            backend_inference=read("BACKEND_INFERENCE_PORT", 0) or None,
            backend_metrics=read("BACKEND_METRICS_PORT", 0) or None,
        )

    def to_env(self) -> dict[str, str]:
        """The environment `from_env` reads back as these ports (INFERENCE_PORT=..., BACKEND_METRICS_PORT=...):
        for docker/entrypoint.sh run outside a container."""
        return {f"{f.name.upper()}_PORT": str(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def at(cls, base: int) -> "Ports":
        """Inference on `base`, management on base + 1, metrics on base + 2 (gRPC GRPC_OFFSET below,
        TorchServe's own behind the proxy BACKEND_OFFSET above): the layout of the tools' --port-base options."""
        return cls(base, base + 1, base + 2)

    @classmethod
    def free(cls, host: str = HOST) -> "Ports":
        """Five ports the OS says are free on `host` now (each bound to port 0, all held at once so
        they differ), gRPC included: for tests and tools that must not collide with anything."""
        with ExitStack() as held:
            numbers = []
            for _ in fields(cls):
                sock = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                sock.bind((host, 0))
                numbers.append(sock.getsockname()[1])
        return cls(*numbers)


# Requests queued per model before TorchServe answers 503 at once (16 batches, tens of milliseconds of
# work): a quick 503 lets a client or the ingress retry elsewhere.
JOB_QUEUE_SIZE = 256
