"""TEST ONLY: what a running TorchServe did, read from its own words instead of waited for with sleeps:
its ts_log.log (each job batch sent to a worker, each restart back-off) and its management API's
queue of a model (jobs waiting for a worker).

    since = logs.offsets(server.log_dir)      # before the test acts: only later lines count
    ...
    wait_for_batches(server, "lenet5_slow", since, 1)
    pending_requests(server, "lenet5_slow")
"""
from __future__ import annotations

import re
import time

from serving import logs
from serving.management import get_json
from serving.server import Server

FLUSH = "Flushing req.cmd PREDICT"  # WorkerThread, once per batch it sends its worker (DEBUG, on in our log4j2.xml)
RETRY = re.compile(r"Retry worker: \d+ in (\d+) seconds")


def _lines(server: Server, model: str, since: dict[str, int]) -> list[str]:
    """ts_log.log's lines after `since` written by `model`'s worker threads (W-9001-mnist_net_1.0)."""
    return [line for line in logs.new_lines(server.log_dir, logs.TS_LOG, since) if f"-{model}_" in line]


def batches(server: Server, model: str, since: dict[str, int]) -> int:
    """How many batches `model`'s workers were sent after `since`."""
    return sum(FLUSH in line for line in _lines(server, model, since))


def wait_for_batches(server: Server, model: str, since: dict[str, int], count: int, timeout: float = 10.0) -> None:
    """Until `model`'s workers have been sent `count` batches after `since`; TimeoutError after `timeout` s."""
    started = time.monotonic()
    while batches(server, model, since) < count:
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{model}'s workers were sent fewer than {count} batches in {timeout:.0f} s; "
                               f"see {server.log_dir / logs.TS_LOG}")
        time.sleep(0.02)


def retry_back_offs(server: Server, model: str, since: dict[str, int]) -> list[int]:
    """The back-off (s) of each "Retry worker: N in S seconds." TorchServe logged for `model` after `since`."""
    return [int(match[1]) for line in _lines(server, model, since) if (match := RETRY.search(line))]


def pending_requests(server: Server, model: str) -> int:
    """Jobs in `model`'s queue that no worker has taken yet (describe-model's jobQueueStatus)."""
    api = server.management
    description = get_json(f"{api.url}/models/{model}", api.timeout, api.headers)
    return int(description[0]["jobQueueStatus"]["pendingRequests"])
