"""A small client of TorchServe's management API: a model's workers, which models have no READY
worker, and a bounded wait until they all have one.

Standard library only (urllib): docker/healthcheck.py runs it in the container on every probe,
where only serving/, settings/limits.py and settings/model_serving.py are present.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Callable, Iterable

TIMEOUT_S = 2.0
Worker = dict  # one entry of GET /models/<name>'s "workers": {"id", "pid", "status", ...}


def get_json(url: str, timeout: float = TIMEOUT_S, headers: dict | None = None):
    """GET `url` and parse its JSON body; urllib's errors (HTTPError, URLError) and ValueError pass."""
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as response:
        return json.loads(response.read().decode("utf-8"))


@dataclass(frozen=True)
class ManagementAPI:
    """TorchServe's management API at `url` (http://127.0.0.1:8081), with the auth header if any."""
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = TIMEOUT_S

    def workers(self, model: str) -> list[Worker]:
        """The workers of `model`; [] when it is not registered or the API does not answer."""
        try:
            return self._describe(model)
        except (urllib.error.URLError, OSError, ValueError):
            return []

    def not_ready(self, models: Iterable[str],
                  accept: Callable[[Worker], bool] = lambda worker: True) -> dict[str, str]:
        """{model: reason} for each model without a READY worker that `accept`s."""
        problems = {}
        for model in models:
            try:
                workers = self._describe(model)
            except urllib.error.HTTPError as err:
                problems[model] = f"management API answered {err.code} (model not registered?)"
                continue
            except (urllib.error.URLError, OSError) as err:
                problems[model] = f"management API at {self.url} unreachable ({getattr(err, 'reason', err)})"
                continue
            except ValueError:
                problems[model] = "management API answered something that is not JSON"
                continue
            if not any(worker.get("status") == "READY" and accept(worker) for worker in workers):
                states = ", ".join(worker.get("status", "?") for worker in workers) or "no workers"
                problems[model] = f"no READY worker ({states})"
        return problems

    def _describe(self, model: str) -> list[Worker]:
        description = get_json(f"{self.url}/models/{model}", self.timeout, self.headers)
        return description[0].get("workers", []) if description else []


def wait_ready(api: Callable[[], ManagementAPI], models: Iterable[str], timeout: float, *,
               accept: Callable[[Worker], bool] = lambda worker: True, each: Callable[[], None] = lambda: None,
               interval: float = 0.25) -> float:
    """Seconds until every model has had a READY worker that `accept`s. `api()` is asked again each
    round (a token-auth key appears once the server runs); `each()` runs every round and may raise
    to stop the wait early. TimeoutError names the models still without one."""
    started = time.monotonic()
    pending = set(models)
    while True:
        each()
        pending = set(api().not_ready(sorted(pending), accept))
        if not pending:
            return time.monotonic() - started
        if time.monotonic() - started >= timeout:
            raise TimeoutError(f"no READY worker after {timeout:.0f} s for: {', '.join(sorted(pending))}")
        time.sleep(interval)
