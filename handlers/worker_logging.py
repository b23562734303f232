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

What one request may write: the frontend copies every line the worker prints into model_log.log and
ts_log.log, so a client's mistake is one line of at most LINE_CHARS characters of our message (never
the body; the request id the proxy sent, when there is one), and a failure of ours its traceback,
each line clipped and at most TRACEBACK_LINES of them. TorchServe's worker itself logged a traceback
for every malformed JSON body it tried to parse (~4.8 KB of log for a 10-byte request); it no longer
parses bodies (decode_input_request=false, serving/config.py).
"""
from __future__ import annotations

import logging
import re
import traceback

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


LINE_CHARS = 300      # of a client mistake's message in the worker's log
TRACEBACK_LINES = 40  # of a failure's traceback (the first 5 and the last 34 when longer)
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")  # what the proxy sends (serving/nginx.conf.template)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def one_line(text: str, limit: int = LINE_CHARS) -> str:
    """`text` as one log line: control characters (newlines) escaped, at most `limit` characters."""
    text = _CONTROL.sub(lambda m: repr(m.group())[1:-1], text[:4 * limit])
    return text if len(text) <= limit else text[:limit] + "..."


def request_label(index: int, request_id: str | None) -> str:
    """"request 3 (id abc-1)": the batch index, and the request id when it is a sane one."""
    if request_id and REQUEST_ID.fullmatch(request_id):
        return f"request {index} (id {request_id})"
    return f"request {index}"


def log_client_mistake(logger: logging.Logger, label: str, status: int, code: str, message: str) -> None:
    """One line for a request refused with a 4xx: its status, code and the start of our message."""
    logger.info("%s: %d %s: %s", label, status, code, one_line(message))


def failure_text(error: BaseException) -> str:
    """A failure's traceback for the log, bounded: each line clipped, at most TRACEBACK_LINES lines."""
    lines = [one_line(line) for line in "".join(traceback.format_exception(error)).splitlines()]
    if len(lines) > TRACEBACK_LINES:
        tail = TRACEBACK_LINES - 6
        lines = lines[:5] + [f"... {len(lines) - 5 - tail} lines left out ..."] + lines[-tail:]
    return "\n".join(lines)
