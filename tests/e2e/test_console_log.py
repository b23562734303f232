"""TorchServe's console log (Java's stdout) against a real server: it does not grow with traffic, and
a JVM that cannot start is quoted from it. The config and pre-flight checks without a server are in
tests/unit/test_local_config.py."""
from __future__ import annotations

import pytest

from reliability import probe
from serving.logs import CONSOLE_LOG
from serving.server import LaunchError, running
from settings.ports import Ports
from tests.support.paths import MODEL_STORE


@pytest.mark.e2e
def test_console_log_does_not_grow_with_traffic(server):
    """Java's stdout (logs/console.log) used to repeat every log line, unrotated; now log4j writes
    only to its rolling files and console.log holds start-up output."""
    console, ts_log = server.log_dir / CONSOLE_LOG, server.log_dir / "ts_log.log"
    before = console.stat().st_size, ts_log.stat().st_size
    for _ in range(20):
        assert probe.post(f"{server.inference_url}/predictions/lenet5", probe.digit_png()).status == 200
    assert console.stat().st_size == before[0] and before[0] < 64 * 1024, console.read_text()[-500:]
    assert ts_log.stat().st_size > before[1]


@pytest.mark.e2e
def test_a_java_that_cannot_start_is_quoted_from_its_console_log(tmp_path):
    """A JVM that fails before log4j starts says why only on its stdout: the launcher quotes it."""
    with pytest.raises(LaunchError, match="(?s)exited during start-up.*Too small maximum heap"):
        with running(run_dir=tmp_path / "run", model_store=MODEL_STORE, ports=Ports.free(), timeout=60,
                     extra={"vmargs": "-Xmx1k"}):
            pass
