#!/usr/bin/env python3
"""Exit 0 when every model has a READY worker, else 1 and say which are not (and why).

Readiness for the container: the image's HEALTHCHECK and the pod's startup and readiness probes
(k8s/base/deployment.yaml) run this. It asks TorchServe's management API on 127.0.0.1, which
only the pod itself can reach, for each model of serving/settings.py. TorchServe's /ping is not
enough: it answers Healthy while a worker crash-loops.

    python3 docker/healthcheck.py        # MANAGEMENT_PORT overrides the port, as for the server

Standard library only, so a probe costs one short Python start and no torch import.
"""
from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from serving.settings import HOST, Ports  # noqa: E402
from pipeline.model_config import SERVING  # noqa: E402

TIMEOUT_S = 2.0


def not_ready(management_url: str, names) -> dict[str, str]:
    """{model: reason} for each model without a READY worker."""
    problems = {}
    for name in names:
        try:
            with urllib.request.urlopen(f"{management_url}/models/{name}", timeout=TIMEOUT_S) as response:
                description = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as err:
            problems[name] = f"management API answered {err.code} (model not registered?)"
            continue
        except (urllib.error.URLError, OSError) as err:
            problems[name] = f"management API at {management_url} unreachable ({getattr(err, 'reason', err)})"
            continue
        except ValueError:
            problems[name] = "management API answered something that is not JSON"
            continue
        workers = description[0].get("workers", []) if description else []
        if not any(worker.get("status") == "READY" for worker in workers):
            states = ", ".join(worker.get("status", "?") for worker in workers) or "no workers"
            problems[name] = f"no READY worker ({states})"
    return problems


def main() -> int:
    try:
        ports = Ports.from_env()
    except ValueError as err:
        print(f"not ready: {err}", file=sys.stderr)
        return 1
    problems = not_ready(f"http://{HOST}:{ports.management}", SERVING)
    for name, reason in problems.items():
        print(f"not ready: {name}: {reason}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
