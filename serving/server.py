"""One local TorchServe per run directory: start it, wait until every model is READY, stop it.

    with running(run_dir=Path("build/x"), model_store=Path("model_store"), ports=Ports.free()) as server:
        requests.post(f"{server.inference_url}/predictions/lenet5", data=png)

`torchserve --start` exits 0 even when start-up fails, so `start` checks what it can first (Java,
archives, ports, a server already running), then polls the management API until every model has
a READY worker, and on failure raises LaunchError with the reason from TorchServe's log; whatever
it started is stopped again. `running` (and `running_together`, several at once) always stop the
server at the end; serving/launcher.py is the command line over `start` and `stop`.

Each run directory is a separate server: its config.properties, logs/ and tmp/ (TorchServe's
pid file and worker sockets live in the temp dir, so TEMP/TMPDIR=<run-dir>/tmp keeps two
checkouts, or the tests and a developer's server, from colliding).

With `proxy` (the default, as in production), nginx (serving/proxy.py) listens on the public
inference and metrics ports and TorchServe on 127.0.0.1 behind it (ports.backend_*); `stop` drains
nginx first (in-flight requests finish), then stops TorchServe. proxy=False serves TorchServe
directly on the public ports (the benchmark's server variants).

`stop` also ends what a crash left behind: workers of a frontend killed with -9 (a worker busy
in an inference outlives its frontend), a stale pid file or key file; `start` does the same
before it starts.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import psutil

from serving import logs, processes, proxy
from serving.api_keys import KeysError
from serving.batcher import AGENT_JAR, STATUS_FILE, BatcherBuildError, Verdict, agents, require_agents, verdict
from serving.config import render
from serving.management import ManagementAPI
from serving.management import wait_ready as wait_all_ready
from serving.proxy import stop as stop_proxy
from serving.tls import TLSError, TLSFiles, local_certificates
from settings.model_serving import SERVING, missing_archives
from settings.ports import HOST, Ports

PID_FILE = ".model_server.pid"
KEY_FILE = "key_file.json"  # TorchServe writes it in its working directory (the run dir) with token auth on
CONSOLE_LOG = logs.CONSOLE_LOG


class LaunchError(RuntimeError):
    """Start-up failed; the message says why and what to do."""


@dataclass(frozen=True)
class Server:
    """Where one TorchServe runs: its run directory and ports, and what follows from them."""
    run_dir: Path
    ports: Ports
    proxied: bool = True  # nginx on the public ports, TorchServe behind it on ports.backend_*
    tls: bool = False     # the proxy speaks HTTPS, with the certificates of tls_files
    api_keys: Path | None = None  # the proxy takes only the API keys of this file (serving/api_keys.py)

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def inference_url(self) -> str:
        """What clients use: the proxy, or TorchServe itself when not proxied."""
        return f"{self.scheme}://{HOST}:{self.ports.inference}"

    @property
    def backend_url(self) -> str:
        """TorchServe's own inference listener (behind the proxy when proxied)."""
        return f"http://{HOST}:{self.ports.backend_inference if self.proxied else self.ports.inference}"

    @property
    def management_url(self) -> str:
        return f"http://{HOST}:{self.ports.management}"

    @property
    def metrics_url(self) -> str:
        return f"{self.scheme}://{HOST}:{self.ports.metrics}"

    @property
    def tls_files(self) -> TLSFiles:
        """The proxy's certificate and key, and the local CA that signed them (clients trust ca.pem)."""
        return local_certificates(self.run_dir / "tls")

    @property
    def tmp_dir(self) -> Path:
        return self.run_dir / "tmp"

    @property
    def proxy_dir(self) -> Path:
        return self.run_dir / "proxy"

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def pid_file(self) -> Path:
        return self.tmp_dir / PID_FILE

    @property
    def key_file(self) -> Path:
        return self.run_dir / KEY_FILE

    @property
    def management(self) -> ManagementAPI:
        """The management API client, with the current token auth key if there is one."""
        return ManagementAPI(self.management_url, self.auth("management"))

    def env(self) -> dict:
        env = dict(os.environ)
        env.update({
            "TEMP": str(self.tmp_dir), "TMPDIR": str(self.tmp_dir),
            "LOG_LOCATION": str(self.log_dir), "METRICS_LOCATION": str(self.log_dir),
            # one intra-op thread per worker: see settings/model_serving.py (torch_threads)
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        })
        return env

    def keys(self) -> dict[str, str]:
        """Token auth keys by kind ("management", "inference", "API"); empty when token auth is off."""
        try:
            document = json.loads(self.key_file.read_text())
        except (OSError, ValueError):
            return {}
        return {kind: entry["key"] for kind, entry in document.items() if isinstance(entry, dict) and "key" in entry}

    def auth(self, kind: str = "management") -> dict[str, str]:
        """The Authorization header for one API ("management" or "inference"), {} without token auth."""
        key = self.keys().get(kind)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def pid(self) -> int | None:
        """The live Java frontend of this run dir, from its pid file; None when there is none."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        # this run dir's Java only: a recycled pid, even another server's Java, is not ours
        return pid if processes.alive(pid, f"-Djava.io.tmpdir={self.tmp_dir}") else None

    def batcher(self) -> Verdict:
        """Which batcher this server's frontend runs: our agent's verdict (serving/batcher.py), or
        "absent" when its config.properties starts Java without the agent."""
        try:
            configured = agents((self.run_dir / "config.properties").read_text())
        except OSError:
            configured = []
        if not any(Path(jar).name == AGENT_JAR.name for jar in configured):
            return Verdict("absent", "config.properties starts Java without our agent (TorchServe's own batcher)")
        return verdict(self.tmp_dir)

    def processes(self) -> list[psutil.Process]:
        """Java and the workers of this run dir, orphans of a crashed frontend included."""
        return processes.server_processes(self.tmp_dir)


def torchserve_bin() -> str:
    return str(Path(sys.executable).parent / "torchserve")


def running_address(server: Server) -> str:
    """Where the server of this run dir listens, from the config.properties it was started with
    (not this invocation's ports: a second `make serve INFERENCE_PORT=...` must not name its own)."""
    try:
        for line in (server.run_dir / "config.properties").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "inference_address":
                return value.strip().replace("\\:", ":")
    except OSError:
        pass
    return "ports unknown (its config.properties is gone)"


def preflight(server: Server, model_store: Path) -> None:
    """LaunchError when this server cannot start: no Java (or nginx, rotatelogs), no archives, already running,
    a port taken."""
    if server.proxied:
        try:
            proxy.nginx_bin()
            proxy.rotatelogs_bin()
            if server.api_keys:
                proxy.njs_module()
        except proxy.ProxyError as err:
            raise LaunchError(str(err)) from None
    if shutil.which("java") is None:
        raise LaunchError("Java is not on the PATH; TorchServe's frontend needs it. Install a JRE 11+ "
                          "(Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless) and try again.")
    problem = missing_archives(model_store)
    if problem:
        raise LaunchError(problem)
    running = server.pid()
    if running:
        raise LaunchError(f"TorchServe is already running from {server.run_dir} (pid {running}) on "
                          f"{running_address(server)}. Stop it first with `make stop`.")
    ports = [("inference", server.ports.inference), ("management", server.ports.management),
             ("metrics", server.ports.metrics), ("grpc_inference", server.ports.grpc_inference),
             ("grpc_management", server.ports.grpc_management)]
    if server.proxied:
        ports += [("backend_inference", server.ports.backend_inference),
                  ("backend_metrics", server.ports.backend_metrics)]
    for label, port in ports:
        if processes.port_in_use(port):
            raise LaunchError(f"{label.replace('_', ' ')} port {port} on {HOST} is already in use (another "
                              f"server?). Stop whatever holds it (`ss -ltnp 'sport = :{port}'` shows it) or "
                              f"choose another port: make serve {label.upper()}_PORT=<port>.")


def start(*, run_dir: Path, model_store: Path, ports: Ports | None = None, timeout: float = 120.0,
          profile: str = "local", token_auth: bool = False, extra: dict | None = None, proxy: bool = True,
          tls: bool = False, api_keys: Path | None = None) -> Server:
    """Start TorchServe from `run_dir`, wait until every model has a READY worker, then (`proxy`) the
    reverse proxy in front of it, speaking HTTPS with `tls` (a local CA and certificate in
    run_dir/tls, made on first use) and taking only the keys of the `api_keys` file. `extra`:
    config.properties settings that replace the profile's (tests and benchmarks). LaunchError says
    what went wrong; anything this call started is stopped again by then."""
    if (tls or api_keys) and not proxy:
        raise LaunchError("TLS and API keys are the proxy's: start with the proxy")
    server = Server(Path(run_dir).resolve(), ports or Ports.from_env(), proxied=proxy, tls=tls,
                    api_keys=Path(api_keys).resolve() if api_keys else None)
    model_store = Path(model_store).resolve()
    if server.pid() is None:  # a crashed server's proxy still holds the public ports
        stop_proxy(server.proxy_dir, timeout=5)
    preflight(server, model_store)
    server.tmp_dir.mkdir(parents=True, exist_ok=True)
    server.log_dir.mkdir(parents=True, exist_ok=True)
    processes.end(server.processes())  # workers a frontend killed with -9 left behind
    server.pid_file.unlink(missing_ok=True)
    server.key_file.unlink(missing_ok=True)  # a dead server's keys; TorchServe writes new ones
    (server.tmp_dir / STATUS_FILE).unlink(missing_ok=True)  # the last run's verdict
    since = {**logs.offsets(server.log_dir), CONSOLE_LOG: 0}  # ts_log keeps earlier runs: quote only this one's
    config = server.run_dir / "config.properties"
    properties = render(profile, model_store, server.ports, token_auth, extra, proxied=server.proxied)
    try:
        require_agents(properties)
    except BatcherBuildError as err:
        raise LaunchError(str(err)) from None
    config.write_text(properties)
    command = [torchserve_bin(), "--start", "--ncs", "--ts-config", str(config), "--model-store", str(model_store)]
    if "-Dlog4j.configurationFile=" not in (extra or {}).get("vmargs", ""):  # else the caller's logging
        command += ["--log-config", str(logs.LOG4J_CONFIG)]
    try:
        # Java inherits our stdout/stderr: a pipe would never reach EOF, so use a file, new for
        # each start (the log4j files keep the history).
        console = server.log_dir / CONSOLE_LOG
        with console.open("wb") as out:
            result = subprocess.run(command, cwd=server.run_dir, env=server.env(), stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        if result.returncode != 0:
            tail = console.read_text(errors="replace").splitlines()[-10:]
            raise LaunchError(f"torchserve --start failed ({result.returncode}):\n" + "\n".join(tail))
        wait_ready(server, timeout, since)
        if server.proxied:  # the production profile's proxy listens on every address, as in the pod
            start_proxy(server, HOST if profile == "local" else "0.0.0.0")
    except BaseException:
        stop(server.run_dir, quiet=True)
        raise
    return server


def start_proxy(server: Server, listen_address: str = HOST) -> None:
    """nginx on the public ports, in front of this server's TorchServe (LaunchError if it cannot start)."""
    try:
        tls = server.tls_files if server.tls else None
        proxy.start(server.proxy_dir, server.ports, listen_address=listen_address, tls=tls, keys_file=server.api_keys)
    except (proxy.ProxyError, TLSError, KeysError) as err:
        raise LaunchError(str(err)) from None


def reload_proxy(run_dir: Path) -> bool:
    """The running proxy of `run_dir` re-reads its keys file and certificates, dropping no connection;
    False when none runs there. LaunchError when the new files do not load (the old ones stay)."""
    try:
        return proxy.refresh(Server(Path(run_dir).resolve(), Ports()).proxy_dir)
    except proxy.ProxyError as err:
        raise LaunchError(str(err)) from None


def wait_ready(server: Server, timeout: float, since: dict[str, int] | None = None) -> None:
    """Poll until every model has a READY worker. Fails at once when TorchServe exits, or logs
    that it failed to load an archive (it would serve the others and never load that one)."""
    seen_pid = False

    def still_starting() -> None:
        nonlocal seen_pid
        pid = server.pid()
        # torchserve writes the pid file once Java runs (start() removed the old one): a pid file
        # without a live Java means it exited, even before the first look
        seen_pid = seen_pid or pid is not None or server.pid_file.is_file()
        if seen_pid and pid is None:
            raise LaunchError("TorchServe exited during start-up. From its log:\n"
                              + logs.reason(server.log_dir, since=since))
        failures = logs.load_failures(server.log_dir, since)
        if failures:
            raise LaunchError("TorchServe failed to load " + "; ".join(failures) + ". Rebuild the archive "
                              "with `make archive` (a truncated or damaged .mar, or one built by another "
                              f"version). From its log:\n{logs.reason(server.log_dir, since=since)}")

    try:
        wait_all_ready(lambda: server.management, SERVING, timeout, each=still_starting)
    except TimeoutError as err:
        raise LaunchError(f"{err}. From TorchServe's log:\n{logs.reason(server.log_dir, since=since)}") from None


def stop(run_dir: Path, *, quiet: bool = False, timeout: float = 30.0) -> bool:
    """Stop the server of `run_dir`; True when one was running. Waits until Java and workers exit,
    and ends whatever a crashed server left behind (orphaned workers, stale pid and key files)."""
    server = Server(Path(run_dir).resolve(), Ports())
    drained = proxy.stop(server.proxy_dir)  # first: no new requests, in-flight ones finish
    pid = server.pid()
    if pid is not None:  # SIGTERM to Java, as `torchserve --stop` sends: TorchServe's own shutdown stops its workers
        try:
            java = psutil.Process(pid)
            java.terminate()
            processes.wait_exited([java], timeout)
        except psutil.NoSuchProcess:
            pass
    leftovers = server.processes()  # Java that did not stop in time, orphaned workers
    processes.end(leftovers)
    server.pid_file.unlink(missing_ok=True)  # a stale pid file must not block the next start
    server.key_file.unlink(missing_ok=True)
    if not quiet:
        if drained:
            print(f"stopped the proxy (nginx) of {server.run_dir} after its in-flight requests")
        if pid is not None:
            print(f"stopped TorchServe (pid {pid}) from {server.run_dir}")
        elif leftovers:
            print(f"no TorchServe frontend was running from {server.run_dir}; ended {len(leftovers)} "
                  f"leftover process(es) of a crashed one: {', '.join(str(p.pid) for p in leftovers)}")
        else:
            print(f"no TorchServe running from {server.run_dir}")
    return pid is not None


@contextmanager
def running(*, run_dir: Path, model_store: Path, ports: Ports | None = None, timeout: float = 120.0,
            profile: str = "local", token_auth: bool = False, extra: dict | None = None,
            proxy: bool = True, tls: bool = False, api_keys: Path | None = None) -> Iterator[Server]:
    """A READY server for the `with` block (start()'s arguments), always stopped afterwards."""
    server = start(run_dir=run_dir, model_store=model_store, ports=ports, timeout=timeout, profile=profile,
                   token_auth=token_auth, extra=extra, proxy=proxy, tls=tls, api_keys=api_keys)
    try:
        yield server
    finally:
        stop(server.run_dir, quiet=True)


@contextmanager
def running_together(runs: dict[str, dict]) -> Iterator[dict[str, Server]]:
    """Several servers started at once, {name: start()'s keywords} -> {name: Server}, all stopped
    afterwards, at once too (each stop waits seconds for Java). When any fails, the others are stopped
    and LaunchError names every failure."""
    with ThreadPoolExecutor(max(1, len(runs))) as pool:
        futures = {name: pool.submit(start, **kwargs) for name, kwargs in runs.items()}
    servers, failures = {}, []
    for name, future in futures.items():
        try:
            servers[name] = future.result()
        except Exception as err:  # noqa: BLE001 - reported together below, after the others stop
            failures.append(f"{name}: {err}")
    try:
        if failures:
            raise LaunchError("; ".join(failures))
        yield servers
    finally:
        with ThreadPoolExecutor(max(1, len(servers))) as pool:
            list(pool.map(lambda server: stop(server.run_dir, quiet=True), servers.values()))
