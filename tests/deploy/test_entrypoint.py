"""docker/entrypoint.sh without a real TorchServe: --print-config is the production profile and the
launcher's worker environment; it refuses bad settings clearly; SIGTERM while it is still rendering
the config ends it; the GPU image refuses to start without a GPU. Serving through it:
tests/deploy/test_entrypoint_serving.py.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading

import pytest

from serving import launcher
from serving.config import render
from settings.ports import Ports
from tests.support.entrypoint import entrypoint_env
from tests.support.paths import MODEL_STORE
from tests.support.paths import REPO as ROOT
from tests.support.properties import parse_properties
from tests.support.venv_tools import BIN


def test_entrypoint_print_config_is_the_production_profile_and_the_launchers_worker_env(tmp_path):
    ports = Ports.free()
    store = MODEL_STORE
    env = entrypoint_env(ports, store, tmp_path / "work")
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(name, None)
    result = subprocess.run([str(ROOT / "docker" / "entrypoint.sh"), "--print-config"], capture_output=True,
                            text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    config = "\n".join(line for line in lines if "=" in line and not re.match(r"^[A-Z_]+=", line)) + "\n"
    expected = render("production", store.resolve(), ports)
    assert parse_properties(config) == parse_properties(expected)
    printed_env = dict(line.split("=", 1) for line in lines if re.match(r"^[A-Z_]+=", line))
    launcher_env = launcher.Server(tmp_path, ports).env()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        assert printed_env[name] == launcher_env[name], name
    assert printed_env["TEMP"] == printed_env["TMPDIR"] == str(tmp_path / "work" / "tmp")


def test_entrypoint_refuses_clearly(tmp_path):
    base = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "WORK_DIR": str(tmp_path / "w")}
    cases = [({"MODEL_STORE": str(tmp_path / "nowhere")}, "does not exist"),
             ({"MODEL_STORE": str(tmp_path)}, "has no lenet5.mar"),
             ({"MODEL_STORE": str(MODEL_STORE), "LISTEN_ADDRESS": "everywhere"}, "LISTEN_ADDRESS")]
    for extra, message in cases:
        result = subprocess.run([str(ROOT / "docker" / "entrypoint.sh"), "--print-config"], capture_output=True,
                                text=True, env={**base, **extra}, timeout=60)
        assert result.returncode != 0 and message in result.stderr, (extra, result.stderr)


def test_entrypoint_exits_on_sigterm_while_still_rendering_the_config(tmp_path):
    """The trap is set before anything else: a SIGTERM while the config renders (a python3 made
    slow here) ends the script with status 0 and TorchServe is never started. Without the trap,
    bash as PID 1 would ignore the signal until the kubelet's SIGKILL."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    started = tmp_path / "python3-started"
    slow_python = fake_bin / "python3"
    slow_python.write_text(f"#!/bin/sh\ntouch {shlex.quote(str(started))}\nsleep 1\n"
                           f"exec {shlex.quote(sys.executable)} \"$@\"\n")
    slow_python.chmod(0o755)
    work_dir = tmp_path / "work"
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}",
           "MODEL_STORE": str(MODEL_STORE), "WORK_DIR": str(work_dir), "LISTEN_ADDRESS": "127.0.0.1"}
    script = subprocess.Popen([str(ROOT / "docker" / "entrypoint.sh")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        for _ in range(300):  # up to 30 s for the script to reach the config step
            if started.exists() or script.poll() is not None:
                break
            threading.Event().wait(0.1)
        assert started.exists(), f"the entrypoint never ran python3:\n{script.communicate(timeout=30)[0]}"
        script.send_signal(signal.SIGTERM)
        output, _ = script.communicate(timeout=30)
    finally:
        if script.poll() is None:
            script.kill()
            script.wait(timeout=10)
    assert script.returncode == 0, (script.returncode, output)
    assert "entrypoint: stop requested before TorchServe started: exiting" in output, output
    assert "starting TorchServe" not in output, output
    assert not (work_dir / "tmp" / ".model_server.pid").exists()


def test_entrypoint_of_the_gpu_image_refuses_to_start_without_a_gpu(tmp_path):
    """TINYSERVE_VARIANT=cuda (the GPU image) where torch sees no GPU: the entrypoint says so and
    exits before starting TorchServe; REQUIRE_GPU=0 lets it go on (to a fake torchserve on the
    PATH that only leaves a mark)."""
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the refusal cannot be shown here")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    ran = tmp_path / "torchserve-ran"
    (fake_bin / "torchserve").write_text(f"#!/bin/sh\ntouch {shlex.quote(str(ran))}\n")
    (fake_bin / "torchserve").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}",
           "MODEL_STORE": str(MODEL_STORE), "WORK_DIR": str(tmp_path / "work"),
           "LISTEN_ADDRESS": "127.0.0.1", "TINYSERVE_VARIANT": "cuda"}
    result = subprocess.run([str(ROOT / "docker" / "entrypoint.sh")], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no usable GPU" in result.stderr and "REQUIRE_GPU=0" in result.stderr, result.stderr
    assert not ran.exists()
    result = subprocess.run([str(ROOT / "docker" / "entrypoint.sh")], capture_output=True, text=True,
                            env={**env, "REQUIRE_GPU": "0"}, timeout=120)
    assert ran.exists(), result.stdout + result.stderr
    assert "no usable GPU" not in result.stderr
