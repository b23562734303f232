"""The proxy's drain, end to end on loopback: 64 requests in flight, every one answered, when `make stop`
stops the server and when the pod's entrypoint (docker/entrypoint.sh) gets SIGTERM. Each test starts its
own server (it stops it) from a store whose lenet5.mar is LeNet-5 with the slow test handler
(tests/support/slow_handler.py: it sleeps the seconds its Content-Type names). Figures go to
docs/RELIABILITY.md (`pytest -s` prints them).
"""
from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from export.archive import ArchiveError, build_archive
from reliability import probe
from serving import proxy
from serving.management import ManagementAPI, wait_ready
from serving.processes import port_in_use
from serving.server import LaunchError, Server, running, stop
from settings.limits import LIMITS
from settings.model_serving import SERVING
from settings.ports import HOST, Ports
from tests.support.entrypoint import entrypoint_env, entrypoint_running
from tests.support.nginx import PREDICT, nginx_pids, seconds
from tests.support.paths import ARTIFACTS, MODEL_STORE
from tests.support.slow_handler import sleep_headers
from tests.support.slow_model import HANDLER as SLOW_HANDLER

pytestmark = pytest.mark.e2e

IN_FLIGHT = 64
SLEEP_S = 2.0


@pytest.fixture(scope="module")
def slow_store(tmp_path_factory) -> Path:
    """A model store whose lenet5.mar is LeNet-5 served by the slow test handler, under the name
    lenet5 (so the entrypoint's production config loads it), beside links to the other archives."""
    root = tmp_path_factory.mktemp("slow-store")
    store = root / "store"
    store.mkdir()
    for name in SERVING:
        if name != "lenet5":
            (store / f"{name}.mar").symlink_to((MODEL_STORE / f"{name}.mar").resolve())
    try:
        build_archive(name="lenet5", handler=SLOW_HANDLER, store=store, model_config=SERVING["lenet5"].model_config(LIMITS),
                      model_file=ARTIFACTS / "lenet5" / "model.pt",
                      files={"model_meta.json": ARTIFACTS / "lenet5" / "manifest.json"}, staging=root / "staging")
    except ArchiveError as err:
        pytest.fail(f"could not build the slow lenet5 archive: {err}")
    return store


def proxied_to_backend(backend_port: int) -> int:
    """Connections nginx holds open to TorchServe (its side: remote port = backend port)."""
    return sum(1 for conn in psutil.net_connections(kind="tcp")
               if conn.raddr and conn.raddr.port == backend_port and conn.status == psutil.CONN_ESTABLISHED)


def drain_with_requests_in_flight(inference_port: int, backend_port: int, drain) -> tuple[list[probe.Answer], float, float]:
    """IN_FLIGHT requests that each ask for SLEEP_S of inference; once nginx has passed every one to
    TorchServe, `drain()`. Returns the answers, when the drain began, and how long `drain()` took."""
    url = f"http://{HOST}:{inference_port}{PREDICT}"
    digit = probe.digit_png()
    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        futures = [pool.submit(probe.post, url, digit, sleep_headers(SLEEP_S), 90) for _ in range(IN_FLIGHT)]
        deadline = time.monotonic() + 20
        while proxied_to_backend(backend_port) < IN_FLIGHT and time.monotonic() < deadline:
            time.sleep(0.1)
        in_flight = proxied_to_backend(backend_port)
        began = time.monotonic()
        drain()
        drain_s = time.monotonic() - began
        answers = [future.result(timeout=120) for future in futures]
    assert in_flight >= IN_FLIGHT, f"only {in_flight} requests reached TorchServe before the drain"
    return answers, began, drain_s


def assert_all_answered(answers: list[probe.Answer], began: float, what: str, drain_s: float):
    statuses = {}
    for answer in answers:
        statuses[answer.status or answer.error] = statuses.get(answer.status or answer.error, 0) + 1
    print(f"\n{what}: {IN_FLIGHT} requests of {SLEEP_S:g} s each in flight: {statuses}; answered "
          f"{seconds(a.done_at - began for a in answers)} after the drain began; the drain took {drain_s:.1f} s")
    assert statuses == {200: IN_FLIGHT}, statuses
    assert all(a.done_at > began for a in answers), "some were answered before the drain began: not in flight"
    assert all(a.json()["model"] == "lenet5" for a in answers)


def assert_gone(server: Server, nginx: list[int], others: list[psutil.Process] = ()):
    gone, alive = psutil.wait_procs([psutil.Process(pid) for pid in nginx if psutil.pid_exists(pid)], timeout=5)
    assert not alive, f"nginx left running: {alive}"
    assert server.processes() == [], "TorchServe processes left"
    assert proxy.pid(server.proxy_dir) is None
    gone, alive = psutil.wait_procs(list(others), timeout=5)
    assert not alive, f"left behind: {[(p.pid, p.name()) for p in alive]}"
    busy = [port for port in (server.ports.inference, server.ports.backend_inference, server.ports.management)
            if port_in_use(port)]
    assert not busy, f"ports still held: {busy}"


def test_make_stop_answers_every_one_of_64_requests_in_flight(tmp_path, slow_store):
    """`make stop` (serving.server.stop: nginx drained with SIGQUIT, then TorchServe stopped) while 64
    requests are in flight: before the proxy they were cut (reset); now every one gets its 200."""
    try:
        with running(run_dir=tmp_path / "run", model_store=slow_store, ports=Ports.free(), timeout=180) as server:
            nginx = nginx_pids(server)
            answers, began, drain_s = drain_with_requests_in_flight(
                server.ports.inference, server.ports.backend_inference, lambda: stop(server.run_dir, quiet=True))
            assert_gone(server, nginx)
    except LaunchError as err:
        pytest.fail(f"the server did not start: {err}")
    assert_all_answered(answers, began, "make stop", drain_s)


def test_sigterm_to_the_entrypoint_answers_every_one_of_64_requests_in_flight(tmp_path, slow_store):
    """docker/entrypoint.sh (the pod's command, run here on loopback) gets SIGTERM while 64 requests
    are in flight: it drains nginx, stops TorchServe, exits 0, and every request gets its 200."""
    ports = Ports.free()
    work_dir = tmp_path / "work"
    log = tmp_path / "entrypoint.log"
    server = Server(work_dir.resolve(), ports)
    with entrypoint_running(entrypoint_env(ports, slow_store, work_dir), log) as run:
        script = run.script
        wait_ready(lambda: ManagementAPI(server.management_url), SERVING, 180, each=run.assert_running, interval=0.5)
        deadline = time.monotonic() + 10
        while proxy.pid(server.proxy_dir) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        descendants = run.processes()
        nginx = [p.pid for p in descendants if p.name() == "nginx"]
        assert nginx, "no nginx under the entrypoint"
        exited = []

        def sigterm():
            script.send_signal(signal.SIGTERM)
            exited.append(script.wait(timeout=60))

        answers, began, drain_s = drain_with_requests_in_flight(ports.inference, ports.backend_inference, sigterm)
        assert exited == [0], log.read_text()[-3000:]
        assert "entrypoint: TorchServe stopped" in log.read_text()
        assert_gone(server, nginx, descendants)
    assert_all_answered(answers, began, "SIGTERM to docker/entrypoint.sh", drain_s)
