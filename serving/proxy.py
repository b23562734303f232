"""The reverse proxy in front of TorchServe: nginx's config, rendered from our settings, and its lifecycle.

TorchServe's Netty frontend has no read timeouts, no idle timeout and no connection cap, answers
client garbage with Java exception text, and runs any method on /predictions/. nginx owns all of
that, in `make serve` and in the pod alike (docker/entrypoint.sh), so what the tests exercise is
what production runs:

  client -> nginx :8080 (public) -> TorchServe 127.0.0.1:8085 (inference)
            nginx :8082 (public) -> TorchServe 127.0.0.1:8087 (metrics)
  management (8081) is TorchServe's own, on 127.0.0.1 only, not proxied.

The config is serving/nginx.conf.template, read as nginx; Python fills in only what is computed
(ports, paths, limits from settings/proxy.py, the JSON error answers, the lines that depend on
the profile or on the user nginx starts as).

    python -m serving.proxy --profile local --prefix .run/proxy     # print the config
    python -m serving.proxy --profile production --prefix /tmp/tinyserve/proxy --listen-address 0.0.0.0

RELIABILITY.md has the attacks the settings answer.
"""
from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from serving import api_keys, processes
from serving.api_keys import ApiKeys
from serving.proxy_errors import (
    BACKEND_ERRORS,
    BAD_CONTENT_TYPE,
    ERRORS,
    error_locations,
    error_pages,
    json_body,
    key_checks,
)
from serving.tls import TLSError, TLSFiles
from settings.limits import LIMITS
from settings.ports import HOST, Ports
from settings.proxy import KEYS, PROXY, TLS, ProxyLimits

ROOT = Path(__file__).resolve().parent.parent
WEB_ROOT = ROOT / "web"   # the try-it page, served at /
TEMPLATE = Path(__file__).resolve().parent / "nginx.conf.template"
CONFIG_FILE = "nginx.conf"
RENDER_ARGS = "render-args.json"
PID_FILE = "nginx.pid"
MIME_TYPES = Path("/etc/nginx/mime.types")

# Ours are @{name}; nginx's own $variables, ${variables} and @locations are left alone. A placeholder
# alone on its line is a block: each of its lines takes that indent, and an empty one drops the line.
PLACEHOLDER = re.compile(r"^(?P<indent>[ \t]*)@\{(?P<block>\w+)\}[ \t]*\n|@\{(?P<name>\w+)\}", re.MULTILINE)


def fill(template: str, values: dict[str, object]) -> str:
    """The template with every @{name} replaced by str(values[name]); ValueError names a missing one."""
    def replace(match: re.Match) -> str:
        name = match["block"] or match["name"]
        if name not in values:
            raise ValueError(f"{TEMPLATE.name} names @{{{name}}}, which serving/proxy.py does not fill in")
        if match["name"]:
            return str(values[name])
        return "".join(f"{match['indent']}{line}\n" if line else "\n" for line in str(values[name]).splitlines())
    return PLACEHOLDER.sub(replace, template)


def _tls(files: TLSFiles | None) -> str:
    """The TLS lines of a server block (empty without certificate files)."""
    if files is None:
        return ""
    return "\n".join([
        f"ssl_certificate {files.certificate};",
        f"ssl_certificate_key {files.key};",
        f"ssl_protocols {TLS.protocols};",
        f"ssl_ciphers {TLS.ciphers};",
        "ssl_prefer_server_ciphers off;  # every suite allowed is strong: the client's fastest wins",
        f"ssl_session_cache {TLS.session_cache};",
        f"ssl_session_timeout {TLS.session_timeout};",
        "ssl_session_tickets off;",
    ])


def render(ports: Ports, prefix: Path, *, listen_address: str = HOST, container: bool = False,
           limits: ProxyLimits = PROXY, web_root: Path = WEB_ROOT, tls: TLSFiles | None = None,
           keys_file: Path | None = None) -> str:
    """nginx.conf for one server: public inference and metrics on `listen_address`, TorchServe's on
    127.0.0.1 (ports.backend_*), temp files and pid under `prefix`; the access log to stdout, the
    error log to stderr (`start` keeps them in rotated files under prefix/logs). With `tls`, both
    public ports speak HTTPS only (TLSPolicy in settings/proxy.py); plain HTTP to them is a JSON 400.
    With `keys_file` the model routes take only the API keys it names, each at its rate
    (serving/api_keys.py; KeysError when the file is not valid).

    Which errors nginx rewrites: its own always (error_page), TorchServe's only in @torchserve, and
    only codes the handler never answers itself (404, 500, 502, 503, 504, 507; proxy_intercept_errors),
    so the handler's 400/413/415/422 with their specific messages pass through untouched. That is why
    /predictions/ reads the request in one location (body size, method) and proxies in another."""
    prefix = Path(prefix)
    # two sockets per proxied connection; within the hard limit of open files where nginx starts
    # (a container's runtime sets it; nginx cannot raise it), so no setrlimit alert at start
    nofile = min(2 * limits.worker_connections + 64, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    # Started by root (a developer's machine, CI), nginx's workers would drop to `nobody`, who cannot
    # reach a private run dir (pytest's are 0700) for the body buffers: keep the starting user, as
    # TorchServe does. The pod runs as uid 10001, where this line is absent.
    user = "user root root;  # started by root: see serving/proxy.py" if os.geteuid() == 0 else ""
    keys = ApiKeys.load(keys_file) if keys_file else None
    values = {
        "load_modules": f"load_module {KEYS.njs_module};  # njs: hashes the bearer token" if keys else "",
        "api_key_http": api_keys.http_lines(keys),
        "api_key_checks": key_checks(keys),
        "rate_limits": api_keys.location_lines(keys),
        "profile": "container" if container else "local",
        "user": user,
        "prefix": prefix,
        "pid_file": prefix / PID_FILE,
        # stdout/stderr everywhere: the pod's runtime keeps them (the kubelet rotates them), and `start`
        # pipes them into rotatelogs for the local files
        "error_log": "stderr",
        "access_log": "/dev/stdout",
        "mime_types": MIME_TYPES if MIME_TYPES.is_file() else prefix / "mime.types",
        "nofile": nofile,
        "worker_connections": min(limits.worker_connections, (nofile - 64) // 2),
        "drain_timeout_s": limits.drain_timeout_s,
        "read_timeout_s": limits.read_timeout_s,
        "keepalive_timeout_s": limits.keepalive_timeout_s,
        "max_request_bytes": LIMITS.max_request_bytes,
        "body_buffer_bytes": limits.body_buffer_bytes,
        "max_requests_in_flight": limits.max_requests_in_flight,
        "upstream_keepalive": limits.upstream_keepalive,
        "upstream_timeout_s": limits.upstream_timeout_s,
        "backend_host": HOST,
        "backend_inference_port": ports.backend_inference,
        "backend_metrics_port": ports.backend_metrics,
        "listen_address": listen_address,
        "inference_port": ports.inference,
        "metrics_port": ports.metrics,
        "web_root": web_root,
        "tls_listen": " ssl" if tls else "",
        "tls": _tls(tls),
        "method_not_allowed_body": json_body(*ERRORS[405]),
        "bad_content_type_body": json_body(*BAD_CONTENT_TYPE),
        "logged_request_chars": limits.logged_request_chars,
        "header_line_bytes": limits.header_line_bytes,
        "nginx_error_pages": error_pages(ERRORS, "e"),
        "torchserve_error_pages": error_pages(BACKEND_ERRORS, "b"),
        "error_locations": error_locations(limits),
    }
    return fill(TEMPLATE.read_text(), values)


# ---- lifecycle --------------------------------------------------------------------------------
class ProxyError(RuntimeError):
    """nginx could not be started; the message says why and what to do."""


def nginx_bin() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                           if os.access(p, os.X_OK)), None)
    if not found:
        raise ProxyError("nginx is not installed; it is the reverse proxy in front of TorchServe. Install it "
                         "(Debian/Ubuntu: sudo apt-get install nginx-light; `make nginx` does) and try again.")
    return found


def prepare(prefix: Path, ports: Ports, **render_args) -> Path:
    """Write prefix/nginx.conf and make its temp and log dirs; returns the config's path. The arguments
    are kept beside it (render-args.json), for `refresh`."""
    prefix = Path(prefix).resolve()
    for sub in ("logs", "tmp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    if not MIME_TYPES.is_file():
        (prefix / "mime.types").write_text("types { text/html html; text/css css; application/javascript js; "
                                           "image/png png; image/svg+xml svg; }\n")
    config = prefix / CONFIG_FILE
    config.write_text(render(ports, prefix, **render_args))
    (prefix / RENDER_ARGS).write_text(json.dumps({name: _to_json(value)
                                                  for name, value in {"ports": ports, **render_args}.items()}))
    return config


# What render's arguments may hold besides plain JSON values, saved and read back by type name
SAVED_TYPES = {cls.__name__: cls for cls in (Ports, ProxyLimits, TLSFiles)}


def _to_json(value):
    if isinstance(value, Path):
        return {"path": str(value)}
    if dataclasses.is_dataclass(value):
        return {"type": type(value).__name__,
                **{field.name: _to_json(getattr(value, field.name)) for field in dataclasses.fields(value)}}
    return value


def _from_json(value):
    if isinstance(value, dict) and set(value) == {"path"}:
        return Path(value["path"])
    if isinstance(value, dict) and "type" in value:
        return SAVED_TYPES[value["type"]](**{k: _from_json(v) for k, v in value.items() if k != "type"})
    return value


def refresh(prefix: Path) -> bool:
    """Render the running proxy's config again from the arguments it started with (the keys file and
    certificates as they are now), check it, and reload without dropping a connection. False when no
    proxy runs there; ProxyError (the running config stays) when nginx refuses the new one."""
    prefix = Path(prefix).resolve()
    if pid(prefix) is None:
        return False
    try:
        saved = json.loads((prefix / RENDER_ARGS).read_text())
        render_args = {name: _from_json(value) for name, value in saved.items()}
        config = prepare(prefix, render_args.pop("ports"), **render_args)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ProxyError(f"cannot render the proxy's config again: {err}") from None
    check_config(nginx_bin(), config, "nginx refused the new config, the running one stays")
    return reload(prefix)


def check_config(binary: str, config: Path, refusal: str) -> None:
    """nginx -t on `config`; ProxyError starting with `refusal` and nginx's words when it fails."""
    check = subprocess.run([binary, "-t", "-q", "-p", str(config.parent), "-e", "stderr", "-c", str(config)],
                           capture_output=True, text=True)
    if check.returncode != 0:
        raise ProxyError(f"{refusal}:\n{check.stderr.strip()}")


def pid(prefix: Path) -> int | None:
    """The live nginx master of this prefix, from its pid file."""
    try:
        number = int((Path(prefix) / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        process = psutil.Process(number)
        return number if "nginx" in process.name() and process.status() != psutil.STATUS_ZOMBIE else None
    except psutil.Error:
        return None


def njs_module() -> str:
    """nginx's njs module, which hashes API keys (settings/proxy.py KeyDefaults.njs_module)."""
    if not os.path.isfile(KEYS.njs_module):
        raise ProxyError(f"nginx's njs module ({KEYS.njs_module}) is not installed; it checks the API keys. "
                         "Install it (Debian/Ubuntu: sudo apt-get install libnginx-mod-http-js; `make nginx` "
                         "does) and try again.")
    return KEYS.njs_module


def rotatelogs_bin() -> str:
    found = shutil.which("rotatelogs") or ("/usr/bin/rotatelogs" if os.access("/usr/bin/rotatelogs", os.X_OK) else None)
    if not found:
        raise ProxyError("rotatelogs is not installed; it keeps the proxy's logs to a bounded size. Install it "
                         "(Debian/Ubuntu: sudo apt-get install apache2-utils; `make nginx` does) and try again.")
    return found


def log_pipe(prefix: Path, name: str, limits: ProxyLimits) -> subprocess.Popen:
    """rotatelogs reading one of nginx's streams into prefix/logs/<name>.log (the current file, a hard
    link) over prefix/logs/rotated/<name>.log[.1, .2...]: at most log_files_kept files of
    log_file_bytes. It ends when nginx, the last writer, does."""
    logs = prefix / "logs"
    command = [rotatelogs_bin(), "-f", "-D", "-n", str(limits.log_files_kept), "-L", str(logs / f"{name}.log"),
               str(logs / "rotated" / f"{name}.log"), f"{max(1, limits.log_file_bytes // 1024)}K"]
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def start(prefix: Path, ports: Ports, timeout: float = 10.0, **render_args) -> int:
    """Start nginx (daemonised, pid under prefix) for `ports`, its access log and error log piped into
    rotatelogs (prefix/logs/access.log, error.log); its master's pid once it listens."""
    binary = nginx_bin()
    config = prepare(prefix, ports, **render_args)
    prefix = config.parent
    check_config(binary, config, f"nginx rejected {config}")
    limits = render_args.get("limits", PROXY)
    access, errors = log_pipe(prefix, "access", limits), log_pipe(prefix, "error", limits)
    try:  # nginx and its daemon hold the pipes' write ends; ours close here, so rotatelogs ends with nginx
        result = subprocess.run([binary, "-p", str(prefix), "-e", "stderr", "-c", str(config)],
                                stdin=subprocess.DEVNULL, stdout=access.stdin, stderr=errors.stdin,
                                start_new_session=True)
    finally:
        access.stdin.close()
        errors.stdin.close()
    error_log = prefix / "logs" / "error.log"
    if result.returncode != 0:
        raise ProxyError(f"nginx did not start ({result.returncode}): {_tail(error_log)}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        number = pid(prefix)
        if number is not None:
            return number
        time.sleep(0.05)
    raise ProxyError(f"nginx started but wrote no pid file in {timeout:g} s; see {error_log}")


def _tail(log: Path, lines: int = 5) -> str:
    time.sleep(0.1)  # rotatelogs writes what nginx said as it reads it
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) or f"(nothing in {log})"
    except OSError:
        return f"(no {log})"


def reload(prefix: Path) -> bool:
    """Re-read the config and the certificate files without dropping a connection (SIGHUP: new workers
    take new connections, the old ones finish what they hold, as nginx -s reload). True when one ran."""
    number = pid(prefix)
    if number is None:
        return False
    psutil.Process(number).send_signal(signal.SIGHUP)
    return True


def stop(prefix: Path, timeout: float = PROXY.drain_timeout_s + 5.0) -> bool:
    """Graceful stop: nginx stops accepting, lets in-flight requests finish (SIGQUIT), then exits;
    after `timeout` it is killed. True when one was running."""
    number = pid(prefix)
    if number is None:
        return False
    try:
        process = psutil.Process(number)
        process.send_signal(signal.SIGQUIT)
        if processes.wait_exited([process], timeout):
            process.kill()
    except psutil.NoSuchProcess:
        pass
    (Path(prefix) / PID_FILE).unlink(missing_ok=True)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=("local", "production"), default="local")
    parser.add_argument("--prefix", type=Path, required=True, help="the proxy's folder: temp files, pid (and logs)")
    parser.add_argument("--listen-address", default=None, help="public address (local: 127.0.0.1; production 0.0.0.0)")
    parser.add_argument("--write", action="store_true", help="write prefix/nginx.conf and its folders, print its path")
    parser.add_argument("--tls-dir", type=Path, default=None,
                        help="HTTPS only, with tls.crt and tls.key from this folder (a kubernetes.io/tls Secret)")
    args = parser.parse_args(argv)
    production = args.profile == "production"
    listen = args.listen_address or ("0.0.0.0" if production else HOST)
    try:
        ipaddress.ip_address(listen)
    except ValueError:
        print(f"error: LISTEN_ADDRESS / --listen-address {listen!r} is not an IP address (e.g. 0.0.0.0, 127.0.0.1)",
              file=sys.stderr)
        return 2
    try:
        tls = TLSFiles(args.tls_dir / "tls.crt", args.tls_dir / "tls.key").check() if args.tls_dir else None
        if args.write:
            print(prepare(args.prefix, Ports.from_env(), listen_address=listen, container=production, tls=tls))
        else:
            sys.stdout.write(render(Ports.from_env(), args.prefix.resolve(), listen_address=listen,
                                    container=production, tls=tls))
    except (ValueError, TLSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
