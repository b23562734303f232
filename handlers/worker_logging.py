"""TorchServe's per-batch log lines, dropped in the worker before they reach the frontend.

TorchServe's Python worker writes two INFO lines to its stdout for every batch: "Backend received
inference at: <time>" (ts/protocol/otf_message_handler.py, on the root logger) and
"[METRICS]PredictionTime.ms:..." (ts/metrics/caching_metric.py, whose only INFO lines are these).
The Java frontend reads and parses each line from the pipe, and the container's logging
(docker/log4j2.xml) then drops both: stopping them here saves the frontend that work on every batch.
The cost: the PredictionTime gauge (the handler's time per batch) no longer reaches the frontend's
metrics; its request counts and latencies (ts_inference_*, ts_queue_*) stay, and so do the worker's
start-up lines, warnings and errors, and the handler's own lines. Only the logging API is used (a
filter, a level): a TorchServe that logs otherwise is left as it is.
"""
from __future__ import annotations

import logging

RECEIVED_LINE = "Backend received inference at"
METRICS_LOGGER = "ts.metrics.caching_metric"


class ReceivedLines(logging.Filter):
    """Drops the root logger's per-batch "Backend received inference at" line, passes the rest."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(RECEIVED_LINE))


def quiet_per_batch_lines() -> None:
    """Stop TorchServe's per-batch lines in this process (idempotent)."""
    root = logging.getLogger()
    if not any(isinstance(f, ReceivedLines) for f in root.filters):
        root.addFilter(ReceivedLines())
    logging.getLogger(METRICS_LOGGER).setLevel(logging.WARNING)  # its INFO lines are the metric lines
