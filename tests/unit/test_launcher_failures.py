"""The launcher's start-up failures, without a server: a second start names where the running server
listens. The failures of a real start: tests/e2e/test_launcher_failures.py."""
from __future__ import annotations

import shutil

import pytest

from serving.server import LaunchError, Server, preflight
from settings.ports import Ports
from tests.support.paths import MODEL_STORE


def test_second_start_names_where_the_running_server_listens(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.properties").write_text("inference_address=http://127.0.0.1:8080\n")
    monkeypatch.setattr(Server, "pid", lambda self: 4242)
    monkeypatch.setattr(shutil, "which", lambda name: "/usr/bin/java")
    server = Server(run, Ports(9080, 9081, 9082))
    with pytest.raises(LaunchError) as caught:
        preflight(server, MODEL_STORE)
    assert "http://127.0.0.1:8080" in str(caught.value) and "9080" not in str(caught.value)
