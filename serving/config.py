"""Render TorchServe's config.properties from settings/ports.py (addresses, ports, job queue),
settings/limits.py (request size) and settings/model_serving.py (the models, response timeout).

    python -m serving.config --profile local --model-store model_store > config.properties

TorchServe listens on 127.0.0.1 only, in both profiles: its inference and metrics sit behind the
reverse proxy (serving/proxy.py, nginx), which listens on the public ports (127.0.0.1 locally,
0.0.0.0 in the pod, where the Service exposes them); management is never proxied.

Profiles:
- local: token auth off explicitly because only this machine can reach it.
- production: the container's (docker/entrypoint.sh). Token auth is off on
  purpose: TorchServe's tokens are made per process at start and expire after 60 min, so every
  replica would have its own; access is controlled by the cluster instead (NetworkPolicy, ingress;
  k8s/, README "Deployment"). Plus the PRODUCTION settings and PRODUCTION_JVM below (timeouts, JVM).
Both: model-control API off, model URLs limited to archive files directly in the local model store
(`allowed_urls`), Prometheus metrics.
"""
from __future__ import annotations

import argparse
import math
import os
import re
import sys
from pathlib import Path

from serving.batcher import BatcherBuildError, require_agents
from serving.batcher import vm_option as batcher_vm_option
from serving.workers import configured_workers, usable_cpus
from settings.limits import LIMITS
from settings.model_serving import SERVING
from settings.ports import HOST, JOB_QUEUE_SIZE, Ports

PROFILES = ("local", "production")

# Production only (the container, docker/entrypoint.sh), property -> value. Batching and the
# response timeout of each model travel in its archive's model-config.yaml (settings/model_serving.py,
# one line per value with the measurement behind it); the workers per model are sized where the
# server starts (serving/workers.py), job_queue_size (settings/ports.py) is in both profiles.
# Scale out with more pods (k8s HPA).
PRODUCTION: dict[str, str] = {
    # for a model without its own responseTimeout (ours set 30 s in model-config.yaml): a batch takes
    # milliseconds, so only a stuck worker reaches it, and TorchServe then restarts that worker.
    "default_response_timeout": str(max(s.response_timeout_s for s in SERVING.values())),
}
# Production's JVM options (config.properties `vmargs`, rendered by jvm_options with the setting both
# profiles get): the frontend's heap a quarter of the container's memory limit (the Python workers
# need the rest); a Java OutOfMemoryError ends the process so Kubernetes restarts the pod instead of a
# half-working frontend; no hsperfdata file (the root filesystem is read-only).
PRODUCTION_JVM = "-XX:MaxRAMPercentage=25 -XX:+ExitOnOutOfMemoryError -XX:-UsePerfData"


# Both profiles: TorchServe 0.12 hands each batch to CompletableFuture.runAsync(), a new thread per call while
# the common pool's parallelism is 1 (the JDK's default on 2 CPUs), so never 1.
COMMON_POOL_PARALLELISM = "java.util.concurrent.ForkJoinPool.common.parallelism"


def common_pool_parallelism(cpus: float) -> int:
    """The JDK's own default (the CPUs Java counts, less one) but never 1."""
    return max(2, math.ceil(cpus) - 1)


def jvm_options(profile: str, cpus: float | None = None, batcher: bool = True) -> str:
    """The frontend's JVM options (config.properties `vmargs`): PRODUCTION_JVM in production, and in
    both profiles the common pool's parallelism from `cpus` (None: the CPUs this process may use) and
    our batcher (serving/batcher.py; `batcher=False`: TorchServe's own, for comparisons)."""
    base = PRODUCTION_JVM if profile == "production" else ""
    pool = f"-D{COMMON_POOL_PARALLELISM}={common_pool_parallelism(usable_cpus() if cpus is None else cpus)}"
    agent = batcher_vm_option() if batcher else ""
    return " ".join(part for part in (base, pool, agent) if part)


def allowed_urls(model_store: Path | str) -> str:
    """The one URL pattern TorchServe may register a model from: an archive file directly in the
    model store. TorchServe 0.12 tests the `url` parameter with Java's Pattern.matches (the whole
    URL, case-insensitive; ArchiveUtils.validateURL), and opening a file: URL percent-decodes it
    once more, so the file name admits no '/', no '%' and no leading '.': neither
    `file://<store>/../x.mar` nor `file://<store>/%2e%2e/x.mar` matches (tests/unit/test_security_config.py,
    tests/e2e/test_security.py)."""
    return f"file://{re.escape(os.path.abspath(model_store))}/[A-Za-z0-9_-][A-Za-z0-9._-]*\\.mar"


def properties_escape(value: str) -> str:
    """Java's Properties.load drops a backslash before an ordinary character (`\\.` reads as `.`):
    double them so a regex reaches TorchServe as written."""
    return value.replace("\\", "\\\\")


def render(profile: str, model_store: Path | str, ports: Ports | None = None,
           token_auth: bool = False, extra: dict | None = None, proxied: bool = True,
           workers: int | None = None) -> str:
    """`extra`: test-only settings (e.g. a small job_queue_size); each replaces the line of that key.
    `workers` per model (None: serving/workers.py's configured_workers(), from WORKERS_PER_MODEL or
    the CPUs this process may use; an archive whose model-config.yaml names workers keeps its own).
    Every listener is on 127.0.0.1. `proxied` (always in production): TorchServe's inference and
    metrics on ports.backend_*, behind the reverse proxy (serving/proxy.py) on the public ports;
    proxied=False (local only: the benchmark's variants): TorchServe itself on the public ports."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES}")
    if profile == "production" and not proxied:
        raise ValueError("production TorchServe always sits behind the proxy (serving/proxy.py)")
    ports = ports or Ports()
    inference_port, metrics_port = ((ports.backend_inference, ports.backend_metrics) if proxied
                                    else (ports.inference, ports.metrics))
    store = str(model_store)
    models = ",".join(f"{name}.mar" for name in SERVING)
    lines = [
        f"# TorchServe config, profile {profile}; generated by serving/config.py from settings/ports.py",
        f"inference_address=http://{HOST}:{inference_port}",
        f"management_address=http://{HOST}:{ports.management}",
        f"metrics_address=http://{HOST}:{metrics_port}",
        # gRPC cannot be switched off in TorchServe 0.12: keep it on loopback, on ports of our choosing
        f"grpc_inference_address={HOST}",
        f"grpc_inference_port={ports.grpc_inference}",
        f"grpc_management_address={HOST}",
        f"grpc_management_port={ports.grpc_management}",
        f"model_store={store}",
        f"load_models={models}",
        f"disable_token_authorization={'false' if token_auth else 'true'}",
        "enable_model_api=false",
        f"allowed_urls={properties_escape(allowed_urls(store))}",
        "metrics_mode=prometheus",
        "enable_metrics_api=true",
        f"max_request_size={LIMITS.max_request_bytes}",
        f"max_response_size={LIMITS.max_request_bytes}",
        f"job_queue_size={JOB_QUEUE_SIZE}",
        f"default_workers_per_model={workers or configured_workers()}",
        "install_py_dep_per_model=false",
        # The worker hands request bodies to the handler as bytes: it parses JSON itself, counted first and
        # with clear 4xx (handlers/request_decoding.py). TorchServe's worker would json.loads an
        # application/json body before any check (an 8 MB body of small objects: ~0.2-0.5 s) and log a
        # traceback for each malformed one. The frontend sets the worker's TS_DECODE_INPUT_REQUEST from
        # this property, over any value in its own environment.
        "decode_input_request=false",
        f"vmargs={jvm_options(profile)}",
    ]
    if profile == "production":
        lines += [f"{key}={value}" for key, value in PRODUCTION.items()]
    if extra:
        lines = [line for line in lines if line.split("=", 1)[0] not in extra] + [f"{k}={v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=PROFILES, default="local")
    parser.add_argument("--model-store", required=True)
    parser.add_argument("--token-auth", action="store_true", help="require a bearer token")
    args = parser.parse_args(argv)
    try:
        text = render(args.profile, args.model_store, Ports.from_env(), args.token_auth)
        require_agents(text)  # the entrypoint starts Java with this config
    except (ValueError, BatcherBuildError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
