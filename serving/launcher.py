"""Start, wait for and stop a local TorchServe, failing with the reason instead of exit code 0.

    python -m serving.launcher start [--run-dir .run] [--model-store model_store] [--timeout 120]
    python -m serving.launcher stop  [--run-dir .run]
    python -m serving.launcher status [--run-dir .run]

`torchserve --start` exits 0 even when start-up fails, so `start` checks what it can first (Java,
archives, ports, a server already running), then polls the management API until every model has
a READY worker, and on failure prints the reason from TorchServe's log.

Each run directory is a separate server: its config.properties, logs/ and tmp/ (TorchServe's
pid file and worker sockets live in the temp dir, so TEMP/TMPDIR=<run-dir>/tmp keeps two
checkouts, or the tests and a developer's server, from colliding). Ports come from
serving/settings.py, overridable with INFERENCE_PORT, MANAGEMENT_PORT and METRICS_PORT.

`stop` also ends what a crash left behind: workers of a frontend killed with -9 (a worker busy
in an inference outlives its frontend), a stale pid file or key file; `start` does the same
before it starts.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from serving.config import render
from serving.settings import HOST, Ports
from pipeline.model_config import SERVING

PID_FILE = ".model_server.pid"
CONSOLE_LOG = "console.log"  # Java's stdout and stderr (start-up and JVM messages; log4j writes to files)
KEY_FILE = "key_file.json"  # TorchServe writes it in its working directory (the run dir) with token auth on


class LaunchError(RuntimeError):
    """Start-up failed; the message says why and what to do."""


@dataclass(frozen=True)
class Server:
    run_dir: Path
    ports: Ports

    @property
    def inference_url(self) -> str:
        return f"http://{HOST}:{self.ports.inference}"

    @property
    def management_url(self) -> str:
        return f"http://{HOST}:{self.ports.management}"

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.ports.metrics}"

    @property
    def tmp_dir(self) -> Path:
        return self.run_dir / "tmp"

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def pid_file(self) -> Path:
        return self.tmp_dir / PID_FILE

    def env(self) -> dict:
        env = dict(os.environ)
        env.update({
            "TEMP": str(self.tmp_dir), "TMPDIR": str(self.tmp_dir),
            "LOG_LOCATION": str(self.log_dir), "METRICS_LOCATION": str(self.log_dir),
            # one intra-op thread per worker: see serving/settings.py (torch_threads)
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            # hand JSON bodies to the handler as bytes: it parses them with limits and clear errors
            "TS_DECODE_INPUT_REQUEST": "false",
        })
        return env

    @property
    def key_file(self) -> Path:
        return self.run_dir / KEY_FILE

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
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        # this run dir's Java only: a recycled pid, even another server's Java, is not ours
        return pid if process_alive(pid, f"-Djava.io.tmpdir={self.tmp_dir}\0".encode()) else None


def process_alive(pid: int, marker: bytes = b"java") -> bool:
    """True for a live process whose command line holds `marker`; a zombie (killed, not yet reaped)
    or a recycled pid is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():  # Linux: check state and command, so a stale pid file never blocks a start
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
            command = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, IndexError):
            return False
        return state not in ("Z", "X") and marker in command
    return True


def server_processes(server: Server) -> list:
    """Every live process of this run dir's server: Java (its java.io.tmpdir is our tmp dir) and the
    Python workers (their sockets live in it), including orphans of a frontend killed with -9."""
    import psutil  # a dependency of torchserve itself

    java_flag = f"-Djava.io.tmpdir={server.tmp_dir}"
    socket_prefix = f"{server.tmp_dir}/.ts.sock."
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if java_flag in cmdline or any(arg.startswith(socket_prefix) for arg in cmdline):
            found.append(proc)
    return found


def end_processes(processes: list, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL what is still alive after `grace` seconds; waits until they are gone."""
    import psutil

    for proc in processes:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(processes, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace)


def torchserve_bin() -> str:
    return str(Path(sys.executable).parent / "torchserve")


def port_in_use(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def get_json(url: str, timeout: float = 2.0, headers: dict | None = None):
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as response:
        return json.loads(response.read().decode("utf-8"))


def model_workers(server: Server, name: str) -> list[dict]:
    try:
        description = get_json(f"{server.management_url}/models/{name}", headers=server.auth("management"))
    except (urllib.error.URLError, OSError, ValueError):
        return []
    return description[0].get("workers", []) if description else []


LOG_FILES = ("ts_log.log", CONSOLE_LOG)


def log_offsets(server: Server) -> dict[str, int]:
    """Where each log ends now: a run's own lines are what follows (logs/ keeps earlier runs')."""
    return {name: (server.log_dir / name).stat().st_size if (server.log_dir / name).is_file() else 0
            for name in LOG_FILES}


def new_log_lines(server: Server, name: str, offsets: dict[str, int] | None) -> list[str]:
    """The lines this run wrote to one log (all of it without offsets, or after it rolled over)."""
    log = server.log_dir / name
    if not log.is_file():
        return []
    start = (offsets or {}).get(name, 0)
    with log.open("rb") as f:
        if start > log.stat().st_size:  # rolled over since: the new file is all ours
            start = 0
        f.seek(start)
        return f.read().decode("utf-8", errors="replace").splitlines()


def log_reason(server: Server, lines: int = 15, offsets: dict[str, int] | None = None) -> str:
    """The most telling lines of this run's TorchServe log (ts_log.log) and of Java's own output
    (console.log: a JVM that fails before logging starts says why only there): errors first, else
    the tail. With `offsets` (from log_offsets before the start), only lines written since."""
    found = []
    for name in LOG_FILES:
        text = new_log_lines(server, name, offsets)
        if not text:
            continue
        wanted = [l for l in text if any(k in l for k in ("ERROR", "Exception", "Error:", "error:", "Backend worker",
                                                          "Failed to load model"))]
        picked = (wanted or text)[-lines:]
        found.append("\n".join("    " + l[:300] for l in picked) + f"\n  (full log: {server.log_dir / name})")
    return "\n".join(found) or f"(nothing logged in {server.log_dir} by this start)"


LOAD_FAILURE = re.compile(r"Failed to load model:?\s*(?P<archive>\S+)")


def load_failures(server: Server, offsets: dict[str, int] | None) -> list[str]:
    """'<archive>: <reason>' for each model TorchServe logged it failed to load during this run.
    The reason is the first exception line after the failure (TorchServe logs the stack trace)."""
    text = new_log_lines(server, "ts_log.log", offsets)
    failures = []
    for i, line in enumerate(text):
        match = LOAD_FAILURE.search(line)
        if not match:
            continue
        after = [l.strip() for l in text[i + 1:i + 30] if ("Exception" in l or "Error" in l) and not l.strip().startswith("at ")]
        reason = after[0] if after else line.strip()
        failures.append(f"{Path(match['archive']).name}: {reason[:300]}")
    return failures


def log_config(server: Server) -> Path:
    """TorchServe's own log4j2.xml (from its jar), written to the run dir with two changes, so that
    a long-running server's logs stay bounded on disk:
    - no console appender: Java's stdout, which the launcher keeps in logs/console.log, repeated
      every log line and nothing rotated it; now it holds only start-up and JVM messages;
    - each log file (ts_log.log, model_log.log, access_log.log, ...) rolls at 100 MB into at most
      5 numbered .gz files; TorchServe's own pattern names them by day and keeps every day;
    - the org.pytorch.serve logger does not also pass its lines to the Root logger, which writes
      to ts_log.log too (every line was there twice)."""
    import ts  # torchserve's package: its jar holds the default config

    jar = Path(ts.__file__).parent / "frontend" / "model-server.jar"
    with zipfile.ZipFile(jar) as archive:
        default = archive.read("log4j2.xml").decode("utf-8")
    quiet = re.sub(r'\s*<AppenderRef ref="STDOUT"\s*/>', "", default)
    quiet = re.sub(r"\s*<TimeBasedTriggeringPolicy\s*/>", "", quiet)
    # the Root logger also writes to ts_log: without additivity off, every org.pytorch.serve line
    # was written to ts_log.log twice
    quiet = quiet.replace('<Logger name="org.pytorch.serve" level="debug">',
                          '<Logger name="org.pytorch.serve" level="debug" additivity="false">')
    quiet = quiet.replace(".%d{dd-MMM}.log.gz", ".%i.log.gz")
    if 'ref="STDOUT"' in quiet or "%d{dd-MMM}" in quiet or 'additivity="false"' not in quiet or quiet.count(".%i.log.gz") != default.count("filePattern="):
        raise LaunchError(f"the log4j2.xml in {jar} is not the one this launcher expects (TorchServe 0.12, "
                          "requirements.txt): reinstall it with `make venv`.")
    path = server.run_dir / "log4j2.xml"
    path.write_text(quiet)
    return path


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
    if shutil.which("java") is None:
        raise LaunchError("Java is not on the PATH; TorchServe's frontend needs it. Install a JRE 11+ "
                          "(Debian/Ubuntu: sudo apt-get install openjdk-17-jre-headless) and try again.")
    missing = [name for name in SERVING if not (model_store / f"{name}.mar").is_file()]
    if missing:
        raise LaunchError(f"no archive for {', '.join(missing)} in {model_store}: run `make archive` first.")
    running = server.pid()
    if running:
        raise LaunchError(f"TorchServe is already running from {server.run_dir} (pid {running}) on "
                          f"{running_address(server)}. Stop it first with `make stop`.")
    for label, port in (("inference", server.ports.inference), ("management", server.ports.management),
                        ("metrics", server.ports.metrics), ("grpc_inference", server.ports.grpc_inference),
                        ("grpc_management", server.ports.grpc_management)):
        if port_in_use(port):
            raise LaunchError(f"{label.replace('_', ' ')} port {port} on {HOST} is already in use (another "
                              f"server?). Stop whatever holds it (`ss -ltnp 'sport = :{port}'` shows it) or "
                              f"choose another port: make serve {label.upper()}_PORT=<port>.")


def start(run_dir: Path, model_store: Path, ports: Ports | None = None, timeout: float = 120.0,
          profile: str = "local", token_auth: bool = False, extra: dict | None = None) -> Server:
    server = Server(run_dir.resolve(), ports or Ports.from_env())
    model_store = model_store.resolve()
    preflight(server, model_store)
    server.tmp_dir.mkdir(parents=True, exist_ok=True)
    server.log_dir.mkdir(parents=True, exist_ok=True)
    end_processes(server_processes(server))  # workers a frontend killed with -9 left behind
    server.pid_file.unlink(missing_ok=True)
    server.key_file.unlink(missing_ok=True)  # a dead server's keys; TorchServe writes new ones
    offsets = {**log_offsets(server), CONSOLE_LOG: 0}  # ts_log keeps earlier runs: quote only this one's lines
    config = server.run_dir / "config.properties"
    config.write_text(render(profile, model_store, server.ports, token_auth, extra))
    command = [torchserve_bin(), "--start", "--ncs", "--ts-config", str(config), "--model-store", str(model_store)]
    if "-Dlog4j.configurationFile=" not in (extra or {}).get("vmargs", ""):  # else the caller's logging
        command += ["--log-config", str(log_config(server))]
    # Java inherits the launcher's stdout/stderr: a pipe would never reach EOF, so use a file, new
    # for each start (the log4j files keep the history).
    console = server.log_dir / CONSOLE_LOG
    with console.open("wb") as out:
        result = subprocess.run(command, cwd=server.run_dir, env=server.env(), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    if result.returncode != 0:
        tail = console.read_text(errors="replace").splitlines()[-10:]
        raise LaunchError(f"torchserve --start failed ({result.returncode}):\n" + "\n".join(tail))
    wait_ready(server, timeout, offsets)
    return server


def wait_ready(server: Server, timeout: float, offsets: dict[str, int] | None = None) -> None:
    """Poll until every model has a READY worker. Fails at once when TorchServe exits, or logs
    that it failed to load an archive (it would serve the others and never load that one)."""
    deadline = time.monotonic() + timeout
    pending = set(SERVING)
    seen_pid = False
    while time.monotonic() < deadline:
        pid = server.pid()
        # torchserve writes the pid file once Java runs (start() removed the old one): a pid file
        # without a live Java means it exited, even before the first look
        seen_pid = seen_pid or pid is not None or server.pid_file.is_file()
        if seen_pid and pid is None:
            raise LaunchError(f"TorchServe exited during start-up. From its log:\n{log_reason(server, offsets=offsets)}")
        failures = load_failures(server, offsets)
        if failures:
            stop(server.run_dir, quiet=True)
            raise LaunchError("TorchServe failed to load " + "; ".join(failures) + ". Rebuild the archive "
                              "with `make archive` (a truncated or damaged .mar, or one built by another "
                              f"version). From its log:\n{log_reason(server, offsets=offsets)}")
        for name in sorted(pending):
            if any(w.get("status") == "READY" for w in model_workers(server, name)):
                pending.discard(name)
        if not pending:
            return
        time.sleep(0.25)
    stop(server.run_dir, quiet=True)
    raise LaunchError(f"no READY worker after {timeout:.0f} s for: {', '.join(sorted(pending))}. "
                      f"From TorchServe's log:\n{log_reason(server, offsets=offsets)}")


def stop(run_dir: Path, quiet: bool = False, timeout: float = 30.0) -> bool:
    """Stop the server of `run_dir`; True when one was running. Waits until Java and workers exit,
    and ends whatever a crashed server left behind (orphaned workers, stale pid and key files)."""
    server = Server(run_dir.resolve(), Ports())
    pid = server.pid()
    if pid is not None:
        try:  # SIGTERM to Java: TorchServe's own shutdown, which stops its workers
            subprocess.run([torchserve_bin(), "--stop", "--foreground"], cwd=server.run_dir, env=server.env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    leftovers = server_processes(server)  # Java that did not stop in time, orphaned workers
    end_processes(leftovers)
    server.pid_file.unlink(missing_ok=True)  # a stale pid file must not block the next start
    server.key_file.unlink(missing_ok=True)
    if not quiet:
        if pid is not None:
            print(f"stopped TorchServe (pid {pid}) from {server.run_dir}")
        elif leftovers:
            print(f"no TorchServe frontend was running from {server.run_dir}; ended {len(leftovers)} "
                  f"leftover process(es) of a crashed one: {', '.join(str(p.pid) for p in leftovers)}")
        else:
            print(f"no TorchServe running from {server.run_dir}")
    return pid is not None


def example(server: Server) -> str:
    return (f"TorchServe is ready: {', '.join(SERVING)}\n"
            f"  curl -T samples/digit.png {server.inference_url}/predictions/lenet5\n"
            f"  curl -T samples/shoe.png {server.inference_url}/predictions/fashion_mlp\n"
            f"  models: curl {server.management_url}/models   metrics: curl {server.metrics_url}/metrics\n"
            f"  logs: {server.log_dir}   stop: make stop")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("start", "stop", "status"))
    parser.add_argument("--run-dir", type=Path, default=Path(".run"))
    parser.add_argument("--model-store", type=Path, default=Path("model_store"))
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--token-auth", action="store_true", help="require a bearer token (key in <run-dir>/key_file.json)")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            print(example(start(args.run_dir, args.model_store, timeout=args.timeout, token_auth=args.token_auth)))
        elif args.command == "stop":
            stop(args.run_dir)
        else:
            server = Server(args.run_dir.resolve(), Ports.from_env())
            pid = server.pid()
            print(f"running, pid {pid}" if pid else "not running")
            return 0 if pid else 1
    except (LaunchError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
