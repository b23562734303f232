"""Stop, SIGTERM and restart, end to end, through the commands people and containers run:
`python -m serving.launcher stop` (what `make stop` runs), SIGTERM to docker/entrypoint.sh (the
container's entrypoint), and `start` (what `make serve` runs) after kill -9 of the Java frontend.
One server at a time, on ports the OS says are free. Afterwards nothing of the server may be left:
no Java, no worker, no pid file, and the next start must work.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from handlers.contract import check_error
from reliability import probe
from serving import processes
from serving.server import Server, running
from settings.model_serving import SERVING
from settings.ports import HOST, Ports
from tests.support.paths import MODEL_STORE
from tests.support.paths import REPO as ROOT
from tests.support.slow_handler import sleep_headers
from tests.support.slow_model import NAME as SLOW
from tests.support.slow_model import store_with_slow_model

pytestmark = pytest.mark.e2e


@pytest.fixture
def ports() -> Ports:
    return Ports.free()


def port_env(ports: Ports) -> dict[str, str]:
    """The environment that puts `python -m serving.launcher` and docker/entrypoint.sh on `ports`."""
    return {**os.environ, "PYTHONPATH": str(ROOT), **ports.to_env()}


def cli(*args: str, ports: Ports, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "serving.launcher", *args], cwd=ROOT, env=port_env(ports),
                          capture_output=True, text=True, timeout=timeout)


def assert_nothing_left(server: Server, pids: list[int]):
    alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"processes left after stop: {alive}"
    assert server.processes() == []
    assert not server.pid_file.exists(), "stale pid file"
    # nothing blocks the next start: no pid file (above), every port free again
    ports = server.ports
    busy = [port for port in (ports.inference, ports.management, ports.metrics, ports.grpc_inference,
                              ports.grpc_management) if processes.port_in_use(port)]
    assert not busy, f"ports still held after stop: {busy}"


def all_pids(server: Server) -> list[int]:
    return [p.pid for p in server.processes()]


class Traffic:
    """Clients sending requests in a loop until stopped; every answer recorded (bounded: 60 s)."""

    def __init__(self, server: Server, model: str = "lenet5", clients: int = 2, headers=None):
        self.url = f"{server.inference_url}/predictions/{model}"
        self.headers = headers
        self.answers: list[probe.Answer] = []
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def _run(self):
        body = probe.digit_png()
        deadline = time.monotonic() + 60
        while not self.done.is_set() and time.monotonic() < deadline:
            self.answers.append(probe.post(self.url, body, self.headers, timeout=30))
            time.sleep(0.02)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        for thread in self.threads:
            thread.join(timeout=40)


def assert_finished_or_failed_cleanly(answers: list[probe.Answer], limit_s: float):
    """Each request got its answer, a JSON error, or a refused/reset connection, in bounded time."""
    assert answers
    for answer in answers:
        assert answer.seconds < limit_s, f"a request hung for {answer.seconds:.1f} s: {answer.error}"
        if answer.status is None:
            assert "Timeout" not in answer.error, answer.error
        elif answer.status != 200:
            assert answer.json()["code"] == answer.status


def test_stop_lets_in_flight_requests_finish_or_fail_cleanly_and_leaves_nothing(tmp_path, ports):
    extra = store_with_slow_model(tmp_path / "store", MODEL_STORE)
    # the CLI stops it (what `make stop` runs); the with block only cleans up after a failure
    with running(run_dir=tmp_path / "run", model_store=tmp_path / "store", ports=ports, timeout=180,
                 extra=extra) as server:
        probe.wait_ready(server, SLOW)
        pids = all_pids(server)
        assert len(pids) == 5  # Java and four workers
        slow_url = f"{server.inference_url}/predictions/{SLOW}"
        slow: list[probe.Answer] = []
        in_flight = threading.Thread(target=lambda: slow.append(
            probe.post(slow_url, probe.digit_png(), sleep_headers(1.5), timeout=30)))
        with Traffic(server) as traffic:
            in_flight.start()
            time.sleep(0.5)
            started = time.monotonic()
            result = cli("stop", "--run-dir", str(server.run_dir), ports=ports)
            stop_s = time.monotonic() - started
        in_flight.join(timeout=40)
        assert result.returncode == 0 and "stopped TorchServe" in result.stdout, result.stdout + result.stderr
        print(f"\nstop took {stop_s:.1f} s; in-flight 1.5 s request: {slow[0].status or slow[0].error} after "
              f"{slow[0].seconds:.2f} s; traffic: {sum(a.status == 200 for a in traffic.answers)} answered, "
              f"{sum(a.status is None for a in traffic.answers)} refused or reset")
        assert stop_s < 30
        assert_finished_or_failed_cleanly(traffic.answers + slow, limit_s=stop_s + 5)
        assert_nothing_left(server, pids)


def test_sigterm_to_the_container_entrypoint_with_requests_in_flight(tmp_path, ports):
    """docker/entrypoint.sh (the image's ENTRYPOINT, run here on loopback) gets SIGTERM while two
    clients send requests: it exits 0, every request was answered or refused/reset at once, and
    no process of the server is left. (tests/deploy/test_entrypoint_serving.py checks the rest of it.)"""
    work_dir = tmp_path / "work"
    env = {**port_env(ports), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "LISTEN_ADDRESS": HOST, "MODEL_STORE": str(MODEL_STORE), "WORK_DIR": str(work_dir),
           "WORKERS_PER_MODEL": "1"}
    entry = subprocess.Popen([str(ROOT / "docker" / "entrypoint.sh")], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    server = Server(work_dir.resolve(), ports)  # the entrypoint's TMPDIR is WORK_DIR/tmp
    pids: list[int] = []
    try:
        for name in SERVING:
            probe.wait_ready(server, name, timeout=180)
        pids = all_pids(server)
        assert len(pids) == 1 + len(SERVING), pids
        with Traffic(server) as traffic:
            time.sleep(0.5)
            started = time.monotonic()
            entry.send_signal(signal.SIGTERM)
            output, _ = entry.communicate(timeout=60)
            exit_s = time.monotonic() - started
    finally:
        if entry.poll() is None:
            entry.kill()
        processes.end(server.processes())
    print(f"\nSIGTERM to the entrypoint: exited {entry.returncode} after {exit_s:.1f} s; traffic: "
          f"{sum(a.status == 200 for a in traffic.answers)} answered, "
          f"{sum(a.status is None for a in traffic.answers)} refused or reset")
    assert entry.returncode == 0, output[-3000:]
    assert_finished_or_failed_cleanly(traffic.answers, limit_s=exit_s + 5)
    assert any(a.status == 200 for a in traffic.answers)
    assert_nothing_left(server, pids)


def test_start_after_kill_9_of_the_frontend_ends_orphans_and_serves(tmp_path, ports):
    """A crash of the whole server (kill -9 of Java) while a worker is busy in a 20 s inference:
    that worker outlives its frontend (it notices the lost socket only when it answers), the pid
    file is stale. The next `start` (what `make serve` runs) ends the orphan and serves."""
    extra = store_with_slow_model(tmp_path / "store", MODEL_STORE)
    # the CLI restarts and stops it; the with block only cleans up after a failure
    with running(run_dir=tmp_path / "run", model_store=tmp_path / "store", ports=ports, timeout=180,
                 extra=extra) as server:
        probe.wait_ready(server, SLOW)
        old = all_pids(server)
        [busy] = probe.worker_pids(server, SLOW)
        slow: list[probe.Answer] = []
        in_flight = threading.Thread(target=lambda: slow.append(probe.post(
            f"{server.inference_url}/predictions/{SLOW}", probe.digit_png(), sleep_headers(20), timeout=30)))
        in_flight.start()
        time.sleep(0.5)
        java = server.pid()
        os.kill(java, signal.SIGKILL)
        psutil.wait_procs([psutil.Process(java)], timeout=10)
        in_flight.join(timeout=10)
        # not a hang: the proxy answers the lost upstream with its JSON 502
        assert slow and slow[0].status == 502 and slow[0].seconds < 5, slow
        assert check_error(slow[0].json(), 502) == "backend_unavailable"
        time.sleep(0.5)
        assert psutil.pid_exists(busy), "the busy worker should outlive its frontend"
        assert server.pid_file.exists() and server.pid() is None  # stale: its Java is gone
        try:
            started = time.monotonic()
            again = cli("start", "--run-dir", str(server.run_dir), "--model-store", str(MODEL_STORE), ports=ports)
            restart_s = time.monotonic() - started
            assert again.returncode == 0, again.stdout + again.stderr
            print(f"\nrestart after kill -9 of the frontend: READY in {restart_s:.1f} s")
            assert not psutil.pid_exists(busy) or psutil.Process(busy).status() == psutil.STATUS_ZOMBIE
            assert not set(old) & set(all_pids(server)), "a process of the crashed server survived the restart"
            for name in ("lenet5", "mnist_net", "fashion_mlp"):
                answer = probe.post(f"{server.inference_url}/predictions/{name}", probe.digit_png())
                assert answer.status == 200, answer.body[:200]
            new = all_pids(server)
        finally:
            stopped = cli("stop", "--run-dir", str(server.run_dir), ports=ports)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert_nothing_left(server, old + new)
