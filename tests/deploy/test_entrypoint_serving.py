"""The container's command, run here: docker/entrypoint.sh in the foreground with loopback
overrides and a TLS Secret's files (TLS_DIR, as the pod mounts them) serves a real prediction over
HTTPS, logs to stdout only, takes a new certificate without a restart, and stops cleanly on SIGTERM
with no Java or worker process left behind (what Kubernetes does to a pod on every rollout and scale-in).

Ports: five the OS says are free (inference, management, metrics, gRPC x2), so this runs beside
the session server and anyone else's tests.
"""
from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests
import torch

from handlers.contract import check_prediction
from handlers.png import png_bytes
from serving.management import ManagementAPI, wait_ready
from serving.tls import TLSFiles, local_certificates
from serving.workers import configured_workers
from settings.model_serving import SERVING
from settings.ports import Ports
from tests.support.entrypoint import entrypoint_env, entrypoint_running
from tests.support.paths import MODEL_STORE
from tests.support.paths import REPO as ROOT

pytestmark = pytest.mark.e2e
START_TIMEOUT_S = 180
STOP_TIMEOUT_S = 60


def listening_addresses(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket these processes listen on."""
    found = set()
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            found.add((conn.laddr.ip.removeprefix("::ffff:"), conn.laddr.port))  # Java: IPv4-mapped
    return found


def tls_secret(folder: Path, files: TLSFiles) -> Path:
    """A kubernetes.io/tls Secret's files as the pod mounts them: tls.crt and tls.key in `folder`."""
    folder.mkdir(exist_ok=True)
    shutil.copyfile(files.certificate, folder / "tls.crt")
    shutil.copyfile(files.key, folder / "tls.key")
    return folder


def test_entrypoint_serves_a_prediction_and_stops_cleanly_on_sigterm(tmp_path, held_out, scripted):
    ports = Ports.free()
    work_dir = tmp_path / "work"
    secret = tls_secret(tmp_path / "secret", local_certificates(tmp_path / "ca"))
    env = {**entrypoint_env(ports, MODEL_STORE, work_dir), "TLS_DIR": str(secret), "TLS_RELOAD_CHECK_S": "1"}
    ca = str(tmp_path / "ca" / "ca.pem")
    stdout = tmp_path / "stdout.log"
    inference = f"https://127.0.0.1:{ports.inference}"
    management = f"http://127.0.0.1:{ports.management}"
    with entrypoint_running(env, stdout) as run:
        script = run.script
        try:
            wait_ready(lambda: ManagementAPI(management), SERVING, START_TIMEOUT_S, each=run.assert_running, interval=0.5)
        except TimeoutError as err:
            pytest.fail(f"{err}:\n{stdout.read_text()[-3000:]}")

        # the image's readiness script agrees
        check = subprocess.run([sys.executable, str(ROOT / "docker" / "healthcheck.py")], env=env,
                               capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr

        # a real held-out digit the exported model gets right, as a PNG
        data = held_out("lenet5")
        with torch.inference_mode():
            offline = scripted("lenet5")(torch.from_numpy(data.canonical[:50]).unsqueeze(1)).numpy()
        index = next(i for i in range(50) if offline[i].argmax() == data.labels[i])
        response = requests.post(f"{inference}/predictions/lenet5", data=png_bytes(data.raw[index]),
                                 headers={"Content-Type": "image/png"}, timeout=30, verify=ca)
        assert response.status_code == 200, response.text
        body = response.json()
        assert check_prediction(body, data.spec.labels, model="lenet5") == data.spec.labels[data.labels[index]]
        assert body["index"] == int(data.labels[index])
        assert abs(body["probabilities"][body["label"]] - float(offline[index].max())) <= 1e-5

        metrics = requests.get(f"https://127.0.0.1:{ports.metrics}/metrics", timeout=10, verify=ca)
        assert metrics.status_code == 200 and 'ts_inference_requests_total{model_name="lenet5"' in metrics.text

        # the loopback override took, and management is on loopback in any case
        descendants = run.processes()
        java = [p for p in descendants if p.name() == "java"]
        assert len(java) == 1
        workers = [p for p in descendants if "model_service_worker" in " ".join(p.cmdline())]
        assert len(workers) == len(SERVING) * configured_workers()  # sized from this machine's CPUs
        # TorchServe on loopback behind the proxy; nginx on LISTEN_ADDRESS's public ports
        listening = listening_addresses({p.pid for p in java})
        assert {("127.0.0.1", ports.backend_inference), ("127.0.0.1", ports.management),
                ("127.0.0.1", ports.backend_metrics)} <= listening
        assert not any(ip in ("0.0.0.0", "::") for ip, _ in listening), listening
        proxy = listening_addresses({p.pid for p in descendants if p.name() == "nginx"})
        assert proxy == {("127.0.0.1", ports.inference), ("127.0.0.1", ports.metrics)}, proxy

        # logs: on stdout, and no log files in the working directory
        log = stdout.read_text()
        assert "Torchserve version: 0.12.0" in log and "lenet5 ready on " in log
        assert not list(work_dir.rglob("*.log")), list(work_dir.rglob("*.log"))
        # one access line per request, from the proxy, with the request id (TorchServe's own per-request
        # lines stay off): 40 more requests add exactly 40 lines, each naming its id
        time.sleep(1.5)  # the proxy's access log is flushed every second
        lines_before = len(stdout.read_text().splitlines())
        ids = [f"entrypoint-test-{i}" for i in range(40)]
        with requests.Session() as session:
            for rid in ids:  # verify per request: REQUESTS_CA_BUNDLE, where set, overrides a session's own
                answer = session.post(f"{inference}/predictions/lenet5", data=png_bytes(data.raw[index]), verify=ca,
                                      headers={"Content-Type": "image/png", "X-Request-ID": rid}, timeout=30)
                assert answer.status_code == 200 and answer.headers["X-Request-ID"] == rid
        time.sleep(1.5)
        added = stdout.read_text().splitlines()[lines_before:]
        assert [re.search(r" rid=(\S+)", line)[1] for line in added] == ids, added

        # a new certificate in the Secret: served within seconds, the proxy reloaded, not restarted
        newer = local_certificates(tmp_path / "newer-ca")
        tls_secret(secret, newer)
        deadline = time.monotonic() + 10
        while True:
            try:
                assert requests.get(f"{inference}/ping", verify=str(newer.ca), timeout=5).status_code == 200
                break
            except requests.exceptions.SSLError:
                assert time.monotonic() < deadline, "the new certificate was not served within 10 s"
                time.sleep(0.2)
        assert "the TLS certificate in" in stdout.read_text() and run.script.poll() is None
        descendants = run.processes()  # the proxy's new workers included

        # SIGTERM, as Kubernetes sends it: a clean exit, nothing left behind
        started = time.monotonic()
        script.send_signal(signal.SIGTERM)
        assert script.wait(timeout=STOP_TIMEOUT_S) == 0, stdout.read_text()[-3000:]
        stop_s = time.monotonic() - started
        gone, alive = psutil.wait_procs(descendants, timeout=5)
        assert not alive, f"left behind after SIGTERM: {[(p.pid, p.name()) for p in alive]}"
        assert "entrypoint: TorchServe stopped" in stdout.read_text()
        print(f"entrypoint: stopped {len(descendants)} processes in {stop_s:.1f} s after SIGTERM")
