#!/usr/bin/env python3
"""Exit 0 when every model has a READY worker, else 1 and say which are not (and why).

Readiness for the container: the image's HEALTHCHECK and the pod's startup and readiness probes
(k8s/base/deployment.yaml) run this. It asks TorchServe's management API on 127.0.0.1, which
only the pod itself can reach, for each model of settings/model_serving.py (serving/management.py
is the client). TorchServe's /ping is not enough: it answers Healthy while a worker crash-loops.

It also fails while the frontend runs TorchServe's own batcher instead of ours: the agent
(serving/batcher.py) refused this TorchServe or its rewrite failed, as it says in
$WORK_DIR/tmp/tinyserve-batcher.status; an image like that was built wrong (make batcher against
another TorchServe than the image's), and must not take traffic as if it were the one measured.

    python3 docker/healthcheck.py        # MANAGEMENT_PORT overrides the port, WORK_DIR the work dir, as for the server

Standard library only, so a probe costs one short Python start and no torch import.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from serving.batcher import verdict  # noqa: E402
from serving.management import ManagementAPI  # noqa: E402
from settings.model_serving import SERVING  # noqa: E402
from settings.ports import HOST, Ports  # noqa: E402


def main() -> int:
    try:
        ports = Ports.from_env()
    except ValueError as err:
        print(f"not ready: {err}", file=sys.stderr)
        return 1
    problems = ManagementAPI(f"http://{HOST}:{ports.management}").not_ready(SERVING)
    for name, reason in problems.items():
        print(f"not ready: {name}: {reason}", file=sys.stderr)
    if problems:
        return 1
    # the entrypoint's TEMP: Java's temp dir, where the agent writes its verdict
    batcher = verdict(Path(os.environ.get("WORK_DIR") or "/tmp/tinyserve") / "tmp")
    if not batcher.ours:
        print(f"not ready: batcher: {batcher.describe()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
