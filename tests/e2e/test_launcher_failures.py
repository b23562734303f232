"""The launcher's start-up failures say what is wrong, quickly, and only about this run:
a truncated archive stops the wait as soon as TorchServe logs it, and TorchServe's log holds each
line once. Its own server, on free ports. A second start (no server needed):
tests/unit/test_launcher_failures.py."""
from __future__ import annotations

import shutil
import time
from collections import Counter

import pytest

from serving.server import LaunchError, Server, running
from settings.model_serving import SERVING
from settings.ports import Ports
from tests.support.paths import MODEL_STORE

OLD_RUN = "2020-01-01T00:00:00,000 [WARN ] main org.pytorch.serve.ModelServer - Failed to load model: /old/run/ancient.mar"


@pytest.mark.e2e
def test_truncated_archive_fails_fast_naming_it_and_this_runs_log_only(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    for name in SERVING:
        shutil.copy(MODEL_STORE / f"{name}.mar", store / f"{name}.mar")
    whole = (store / "lenet5.mar").read_bytes()
    (store / "lenet5.mar").write_bytes(whole[:len(whole) // 2])
    run = tmp_path / "run"
    (run / "logs").mkdir(parents=True)
    (run / "logs" / "ts_log.log").write_text(OLD_RUN + "\n" + "java.io.IOException: an older run's failure\n")
    ports = Ports.free()
    started = time.monotonic()
    with pytest.raises(LaunchError) as caught:
        with running(run_dir=run, model_store=store, ports=ports, timeout=120):
            pass
    elapsed = time.monotonic() - started
    message = str(caught.value)
    print(f"failed after {elapsed:.1f} s:\n{message}")
    assert "failed to load lenet5.mar" in message, message
    assert "ancient.mar" not in message and "older run" not in message, message
    assert elapsed < 60, f"waited {elapsed:.0f} s"
    log = (run / "logs" / "ts_log.log").read_text().splitlines()[2:]
    repeated = [line for line, n in Counter(log).items() if n > 1 and "org.pytorch.serve" in line]
    assert not repeated, repeated[:3]
    assert Server(run.resolve(), ports).pid() is None
    assert Server(run.resolve(), ports).processes() == []
