"""TorchServe's per-batch lines are stopped in the worker; every other line still gets out."""
import io
import logging

import pytest

from handlers.worker_logging import METRICS_LOGGER, ReceivedLines, quiet_per_batch_lines


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
