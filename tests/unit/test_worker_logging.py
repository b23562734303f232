"""TorchServe's per-batch lines are stopped in the worker; every other line still gets out; what one
request writes to the log is bounded."""
import io
import logging

import pytest

from handlers.worker_logging import (
    LINE_CHARS,
    METRICS_LOGGER,
    TRACEBACK_LINES,
    ReceivedLines,
    one_line,
    quiet_per_batch_lines,
    request_label,
)


@pytest.fixture
def worker_stdout():
    """The worker's logging as ts/model_service_worker.py sets it up: root, INFO, "%(message)s"."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root, metrics = logging.getLogger(), logging.getLogger(METRICS_LOGGER)
    saved = root.level, metrics.level, list(root.filters)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield out
    root.removeHandler(handler)
    root.setLevel(saved[0])
    metrics.setLevel(saved[1])
    for f in list(root.filters):
        if f not in saved[2]:
            root.removeFilter(f)


def test_per_batch_lines_stop_and_the_rest_stays(worker_stdout):
    logging.info("Torch worker started.")
    quiet_per_batch_lines()
    quiet_per_batch_lines()  # idempotent: one filter
    logging.info("Backend received inference at: %d", 1764126000)
    logging.getLogger(METRICS_LOGGER).info("[METRICS]PredictionTime.ms:1.2|#ModelName:lenet5,Level:Model|#type:GAUGE")
    logging.getLogger(METRICS_LOGGER).error("Failed to parse metrics")
    logging.getLogger("handlers.classifier_handler").info("lenet5 ready on cpu")
    logging.warning("Backend worker process died.")
    assert worker_stdout.getvalue().splitlines() == [
        "Torch worker started.", "Failed to parse metrics", "lenet5 ready on cpu", "Backend worker process died."]
    assert sum(isinstance(f, ReceivedLines) for f in logging.getLogger().filters) == 1


def test_the_handler_stops_them_once_ready(loaded):
    """The archive's handler, initialised as TorchServe does: the metrics logger is quiet after it."""
    loaded("lenet5")
    assert not logging.getLogger(METRICS_LOGGER).isEnabledFor(logging.INFO)
    assert any(type(f).__name__ == "ReceivedLines" for f in logging.getLogger().filters)


# ---- what one request may write to the worker's log ---------------------------------------------
MARKER = "QQ-body-marker-QQ"


def test_one_line_escapes_control_characters_and_clips():
    assert one_line("a\nb\r\x00c") == "a\\nb\\r\\x00c"
    assert one_line("x" * 1000) == "x" * LINE_CHARS + "..."
    assert one_line("\n" * 10_000).count("\\n") <= LINE_CHARS


@pytest.mark.parametrize("body", [
    b'{"image": "' + MARKER.encode() + b'" ' + b"x" * 8_000_000,          # malformed JSON, 8 MB
    b'{"instances": [' + b'{"a": "' + MARKER.encode() + b'"}, ' * 400_000 + b"{}]}",  # too many objects
    b"null",
])
def test_a_client_mistake_logs_one_bounded_line(loaded, worker_stdout, body):
    status, answer = loaded("lenet5").one({"body": body}, {"Content-Type": "application/json",
                                                            "X-Request-ID": "abc-1"})
    assert 400 <= status < 500, answer
    lines = worker_stdout.getvalue().splitlines()
    assert len(lines) == 1, lines[:5]
    line = lines[0]
    assert line.startswith(f"request 0 (id abc-1): {status} {answer['error']}: ")
    assert len(line) <= LINE_CHARS + 60 and MARKER not in line and "Traceback" not in line


def test_a_request_id_that_is_not_a_sane_token_is_left_out():
    assert request_label(2, "abc\nFAKE LINE") == "request 2"
    assert request_label(2, "x" * 65) == "request 2"
    assert request_label(2, None) == "request 2"


def test_a_failure_of_ours_logs_a_bounded_traceback(loaded, worker_stdout, monkeypatch):
    """A bug whose exception quotes the request (here 1,000 lines and 1 MB of it) still writes at most
    TRACEBACK_LINES clipped lines, and the request gets its 500."""
    handler = loaded("lenet5")

    def broken(request, row, content_type):
        raise ValueError("\n".join(f"{MARKER} {i}" for i in range(1000)) + "y" * 1_000_000)

    monkeypatch.setattr(handler.handler, "open_request", broken)
    status, answer = handler.one({"body": b"anything"}, {"Content-Type": "image/png"})
    assert (status, answer["error"]) == (500, "internal_error")
    lines = worker_stdout.getvalue().splitlines()
    assert lines[:2] == ["unexpected error decoding request 0", "Traceback (most recent call last):"]
    assert len(lines) == 1 + TRACEBACK_LINES and max(map(len, lines)) <= LINE_CHARS + 3
    assert "lines left out" in lines[6] and lines[-1].endswith("y...")
    assert len(worker_stdout.getvalue()) < 16_000
