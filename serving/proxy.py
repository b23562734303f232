"""The reverse proxy in front of TorchServe: nginx's config, rendered from our settings, and its lifecycle.

TorchServe's Netty frontend has no read timeouts, no idle timeout and no connection cap, answers
client garbage with Java exception text, and runs any method on /predictions/. nginx owns all of
that, in `make serve` and in the pod alike (docker/entrypoint.sh), so what the tests exercise is
what production runs:

  client -> nginx :8080 (public) -> TorchServe 127.0.0.1:8085 (inference)
            nginx :8082 (public) -> TorchServe 127.0.0.1:8087 (metrics)
  management (8081) is TorchServe's own, on 127.0.0.1 only, not proxied.

    python -m serving.proxy --profile local --prefix .run/proxy     # print the config
    python -m serving.proxy --profile production --prefix /tmp/tinyserve/proxy --listen-address 0.0.0.0

Every value below carries the reason for it; RELIABILITY.md has the attacks they answer.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from settings.limits import LIMITS
from settings.model_serving import SERVING
from settings.ports import HOST, Ports

ROOT = Path(__file__).resolve().parent.parent
WEB_ROOT = ROOT / "web"   # the try-it page (issue 17), served at /
CONFIG_FILE = "nginx.conf"
PID_FILE = "nginx.pid"


@dataclass(frozen=True)
class ProxyLimits:
    # a client has this long to send its request line and headers, and between two reads of its body:
    # slowloris and half-sent bodies are closed after it (408) instead of held forever.
    read_timeout_s: int = 10
    # an idle keep-alive connection is closed after this: idle sockets cost nothing for long.
    keepalive_timeout_s: int = 15
    # connections one nginx worker holds (idle ones included): thousands of idle clients fit, and each
    # costs ~1 KB until the read timeout closes it (TorchServe's Java hit its 20,000 fds without a proxy).
    worker_connections: int = 16384
    # requests in flight to TorchServe per pod, the rest get a JSON 503 at once: 3 models x a 256-deep job
    # queue (settings/ports.py) is 768 queued; more only waits longer. Far below Java's fd limit.
    max_requests_in_flight: int = 1024
    # keep-alive connections kept open to TorchServe: no TCP handshake per request under load.
    upstream_keepalive: int = 64
    # a batch takes milliseconds; TorchServe's own responseTimeout (30 s) restarts a stuck worker first.
    upstream_timeout_s: int = max(s.response_timeout_s for s in SERVING.values()) + 5
    # bodies above this go to a temp file in the run dir, so 40 half-sent 8 MB bodies cost disk, not RAM.
    body_buffer_bytes: int = 64 * 1024
    # on SIGTERM, in-flight requests get this long to finish before nginx closes them.
    drain_timeout_s: int = 25


PROXY = ProxyLimits()

# The JSON error answers nginx gives itself (handlers/contract.py's {"error", "message"}).
ERRORS: dict[int, tuple[str, str]] = {
    400: ("bad_request", "The request is not valid HTTP/1.1 (a TLS or HTTP/2 client speaking to a plain HTTP port?). "
                         "Send a plain HTTP request."),
    404: ("not_found", "Nothing is served at this path. POST an image to /predictions/<model> (models: {models}); "
                       "GET /ping tells whether the server is alive."),
    405: ("method_not_allowed", "This path does not accept that method: /predictions/<model> and /explanations/<model> "
                                "take POST or PUT with the image as the body, /ping takes GET."),
    408: ("request_timeout", "The request (headers or body) was not sent within {timeout} s. Send it whole, at once."),
    411: ("length_required", "Send the body with a Content-Length header or chunked encoding."),
    413: ("request_too_large", "The body is larger than {max_bytes:,} bytes. Downscale the image, or split the "
                              "images over several requests."),
    414: ("uri_too_long", "The URL is too long."),
    431: ("headers_too_large", "The request headers are too large."),
    494: ("headers_too_large", "The request headers are too large."),
    505: ("http_version_not_supported", "This port speaks HTTP/1.1 (and 1.0), not HTTP/2 or later."),
}
# TorchServe's own non-handler errors, replaced (the handler never answers these codes itself).
BACKEND_ERRORS: dict[int, tuple[str, str]] = {
    404: ("unknown_model", "No such model (or version) is served here; the models are {models}. "
                           "POST an image to /predictions/<model>."),
    500: ("internal_error", "The server failed on this request; see its log (request id in the X-Request-ID header)."),
    502: ("backend_unavailable", "The model server is not answering (starting or restarting). Retry in a few seconds."),
    503: ("overloaded", "The model queue is full or it has no live worker right now. Retry in a second or two."),
    504: ("timeout", "The model did not answer in time. Retry; if it persists, the server is overloaded."),
    507: ("worker_died", "The worker serving this request died; TorchServe restarts it. Retry in a few seconds."),
}
# A 500 from TorchServe for a multipart body is Netty's form decoder failing on what the client sent
# (a part without Content-Disposition, a boundary that does not match): the client's to fix.
MULTIPART_500 = ("bad_multipart", "The multipart/form-data body could not be parsed: every part needs a "
                                  "Content-Disposition header and the boundary must match the one in the "
                                  "Content-Type header. Or send the image bytes as the whole body with "
                                  "Content-Type image/png or image/jpeg.")


def _json(code: str, message: str) -> str:
    """A JSON body for nginx's `return`: nginx strings take ' quotes, so none may appear inside."""
    body = json.dumps({"error": code, "message": message}, separators=(",", ":"))
    if "'" in body or "$" in body:
        raise ValueError(f"an nginx return string cannot hold ' or $: {body}")
    return body


ERROR_URI = "/_errors/"  # nginx's own error answers: internal locations, unreachable from outside


def _location(name: str, status: int, code: str, message: str, extra: str = "") -> str:
    """A location answering `status` with the JSON error: @b<status> (named) for TorchServe's,
    = /_errors/<status> (internal) for nginx's own, because a request line too broken to have a URI
    (a TLS hello, an HTTP/2 preface) cannot be redirected to a named location. X-Request-ID repeated:
    an add_header at this level hides the server's."""
    headers = '        add_header X-Request-ID $rid always;\n'
    if status == 405:
        headers += '        add_header Allow "POST, PUT, GET, HEAD" always;\n'
    if status in (502, 503, 507):
        headers += '        add_header Retry-After 1 always;\n'
    where, internal = (f"= {name}", "        internal;\n") if name.startswith("/") else (f"@{name}", "")
    body = _json(code, message)
    return f"    location {where} {{\n{internal}{headers}{extra}        return {status} '{body}';\n    }}"


def _error_locations(limits: ProxyLimits) -> str:
    """/_errors/<status>: nginx's own errors; @b<status>: TorchServe's, replaced (the models named are ours,
    settings/model_serving.py; a store with more serves them too, TorchServe says which exist)."""
    models = ", ".join(SERVING)
    blocks = [_location(f"{ERROR_URI}{status}", status, code, message.format(
        models=models, timeout=limits.read_timeout_s, max_bytes=LIMITS.max_request_bytes))
        for status, (code, message) in ERRORS.items()]
    multipart = f"        if ($content_type ~* \"^multipart/\") {{ return 400 '{_json(*MULTIPART_500)}'; }}\n"
    blocks += [_location(f"b{status}", status, code, message.format(models=models),
                         multipart if status == 500 else "")
               for status, (code, message) in BACKEND_ERRORS.items()]
    return "\n".join(blocks)


def _error_pages(statuses, kind: str, indent: str = "        ") -> str:
    """error_page lines: kind "e" (nginx's own: internal URIs), "b" (TorchServe's: named locations)."""
    target = (lambda status: f"{ERROR_URI}{status}") if kind == "e" else (lambda status: f"= @b{status}")
    return "\n".join(f"{indent}error_page {status} {target(status)};" for status in statuses)


def _proxy_location(name: str, limits: ProxyLimits, errors: str) -> str:
    """A named location that sends the request (body read whole first) to TorchServe, then `errors`."""
    return f"""        location {name} {{
            limit_conn per_server {limits.max_requests_in_flight};
            proxy_pass http://torchserve;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header Content-Type $upstream_content_type;
            proxy_set_header X-Request-ID $rid;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_hide_header X-Request-ID;  # TorchServe's own; the client gets $rid
            proxy_read_timeout {limits.upstream_timeout_s}s;
            proxy_send_timeout {limits.upstream_timeout_s}s;
            proxy_connect_timeout 2s;
            proxy_request_buffering on;   # the whole body first: TorchServe never holds a half-sent one
{errors}
        }}"""


def render(ports: Ports, prefix: Path, *, listen_address: str = HOST, container: bool = False,
           limits: ProxyLimits = PROXY, web_root: Path = WEB_ROOT) -> str:
    """nginx.conf for one server: public inference and metrics on `listen_address`, TorchServe's on
    127.0.0.1 (ports.backend_*), temp files and pid under `prefix`; logs to files under prefix/logs,
    or to stdout/stderr in the container (`container`).

    Which errors nginx rewrites: its own always (error_page), TorchServe's only in @torchserve, and
    only codes the handler never answers itself (404, 500, 502, 503, 504, 507; proxy_intercept_errors),
    so the handler's 400/413/415/422 with their specific messages pass through untouched. That is why
    /predictions/ reads the request in one location (body size, method) and proxies in another."""
    prefix = Path(prefix)
    # two sockets per proxied connection; within the hard limit of open files where nginx starts
    # (a container's runtime sets it; nginx cannot raise it), so no setrlimit alert at start
    nofile = min(2 * limits.worker_connections + 64, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    connections = min(limits.worker_connections, (nofile - 64) // 2)
    access_log = "/dev/stdout" if container else prefix / "logs" / "access.log"
    error_log = "stderr" if container else prefix / "logs" / "error.log"
    client_pages = _error_pages(ERRORS, "e")
    temp = "\n".join(f"    {kind}_temp_path {prefix / 'tmp' / kind};" for kind in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    method_405 = _json(ERRORS[405][0], ERRORS[405][1])
    indent = " " * 12
    proxied = _proxy_location("@torchserve", limits, "\n".join([
        f"{indent}proxy_intercept_errors on;    # only the codes below: the handler's own 4xx pass through",
        f"{indent}error_page 408 {ERROR_URI}408;", _error_pages(BACKEND_ERRORS, "b", indent)]))
    proxied_chunked = _proxy_location("@torchserve_chunked", limits, "\n".join([
        _error_pages(ERRORS, "e", indent), f"{indent}error_page 502 = @b502;", f"{indent}error_page 504 = @b504;"]))
    mime = Path("/etc/nginx/mime.types")
    # Started by root (a developer's machine, CI), nginx's workers would drop to `nobody`, who cannot
    # reach a private run dir (pytest's are 0700) for the body buffers: keep the starting user, as
    # TorchServe does. The pod runs as uid 10001, where this line is absent.
    user = "user root root;  # started by root: see serving/proxy.py\n" if os.geteuid() == 0 else ""
    return f"""# nginx config, generated by serving/proxy.py from settings/ports.py and settings/limits.py
# ({'container' if container else 'local'}). Do not edit: change serving/proxy.py.
worker_processes 1;  # one event loop serves ~10k requests/s; the CPU belongs to the model workers
{user}pid {prefix / PID_FILE};
error_log {error_log} warn;
worker_rlimit_nofile {nofile};
worker_shutdown_timeout {limits.drain_timeout_s}s;

events {{
    worker_connections {connections};
}}

http {{
    include {mime if mime.is_file() else prefix / 'mime.types'};
    server_tokens off;
    default_type application/json;
{temp}
    # the client's X-Request-ID when it is a sane token, else nginx's own; sent to TorchServe, logged, returned
    map $http_x_request_id $rid {{
        "~^[A-Za-z0-9._:-]{{1,64}}$" $http_x_request_id;
        default $request_id;
    }}
    # A body without Content-Type, or one curl --data-binary labels a web form, reached Netty's form
    # decoder and got a Java 500: call it what it is, raw bytes (the handler sniffs the image format).
    map $content_type $upstream_content_type {{
        "" application/octet-stream;
        "~*^application/x-www-form-urlencoded" application/octet-stream;
        default $content_type;
    }}
    log_format tinyserve '$remote_addr [$time_iso8601] "$request" $status $body_bytes_sent '
                         '${{request_time}}s upstream=$upstream_status/${{upstream_response_time}}s rid=$rid';
    access_log {access_log} tinyserve buffer=32k flush=1s;  # a write per 32 KB or second, not per request

    client_header_timeout {limits.read_timeout_s}s;
    client_body_timeout {limits.read_timeout_s}s;
    send_timeout {limits.read_timeout_s}s;
    keepalive_timeout {limits.keepalive_timeout_s}s;
    keepalive_requests 10000;
    reset_timedout_connection on;
    client_max_body_size {LIMITS.max_request_bytes};
    client_body_buffer_size {limits.body_buffer_bytes};
    large_client_header_buffers 4 8k;
    limit_conn_zone $server_name zone=per_server:1m;
    limit_conn_status 503;
    limit_conn_log_level warn;

    upstream torchserve {{
        server {HOST}:{ports.backend_inference};
        keepalive {limits.upstream_keepalive};
    }}
    upstream torchserve_metrics {{
        server {HOST}:{ports.backend_metrics};
    }}

    server {{
        listen {listen_address}:{ports.inference} backlog=4096;
        add_header X-Request-ID $rid always;
{client_pages}

        # Read the request here (method; a Content-Length over the limit is a JSON 413), proxy in @torchserve.
        location ~ "^/(predictions|explanations)/[A-Za-z0-9_.-]{{1,64}}(/[A-Za-z0-9._-]{{1,32}})?$" {{
            if ($request_method !~ ^(POST|PUT)$) {{
                add_header X-Request-ID $rid always;
                add_header Allow "POST, PUT" always;
                return 405 '{method_405}';
            }}
{_error_pages(ERRORS, "e", "            ")}
            recursive_error_pages on;  # @torchserve's own error pages, after this jump
            error_page 418 = @torchserve;
            error_page 419 = @torchserve_chunked;
            if ($http_transfer_encoding) {{ return 419; }}
            return 418;
        }}
{proxied}
        # A chunked body is read here, not above (its size is known only as it comes): nginx's own
        # 400 (bad chunks) and 413 (over the limit) must be JSON, and this location's error pages would
        # also catch the handler's 400/413, so it does not intercept TorchServe's answers at all
        # (those stay TorchServe's JSON {{"code", "type", "message"}} for these rare clients).
{proxied_chunked}
        location = /ping {{
            if ($request_method !~ ^(GET|HEAD)$) {{
                add_header X-Request-ID $rid always;
                add_header Allow "GET, HEAD" always;
                return 405 '{_json("method_not_allowed", "/ping takes GET.")}';
            }}
            proxy_pass http://torchserve;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_hide_header X-Request-ID;
            proxy_read_timeout 5s;
            proxy_connect_timeout 2s;
            error_page 502 = @b502;
            error_page 504 = @b504;
        }}
        location / {{  # the try-it page (web/); any other path is a JSON 404
            if ($request_method !~ ^(GET|HEAD)$) {{
                add_header X-Request-ID $rid always;
                add_header Allow "GET, HEAD" always;
                return 405 '{_json("method_not_allowed", "Only GET is served here; POST to /predictions/<model>.")}';
            }}
            root {web_root};
            index index.html;
            try_files $uri $uri/ =404;
            add_header X-Content-Type-Options nosniff always;
            add_header X-Request-ID $rid always;
        }}
{_error_locations(limits)}
    }}

    server {{
        listen {listen_address}:{ports.metrics};
        add_header X-Request-ID $rid always;
{client_pages}
        location = /metrics {{
            if ($request_method !~ ^(GET|HEAD)$) {{ return 405; }}
            proxy_pass http://torchserve_metrics;
            proxy_connect_timeout 2s;
            error_page 502 = @b502;
        }}
        location / {{ return 404; }}
{_error_locations(limits)}
    }}
}}
"""


# ---- lifecycle --------------------------------------------------------------------------------
class ProxyError(RuntimeError):
    """nginx could not be started; the message says why and what to do."""


def nginx_bin() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                           if os.access(p, os.X_OK)), None)
    if not found:
        raise ProxyError("nginx is not installed; it is the reverse proxy in front of TorchServe. Install it "
                         "(Debian/Ubuntu: sudo apt-get install nginx-light; `make venv` does) and try again.")
    return found


def prepare(prefix: Path, ports: Ports, **render_args) -> Path:
    """Write prefix/nginx.conf and make its temp and log dirs; returns the config's path."""
    prefix = Path(prefix).resolve()
    for sub in ("logs", "tmp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    if not Path("/etc/nginx/mime.types").is_file():
        (prefix / "mime.types").write_text("types { text/html html; text/css css; application/javascript js; "
                                           "image/png png; image/svg+xml svg; }\n")
    config = prefix / CONFIG_FILE
    config.write_text(render(ports, prefix, **render_args))
    return config


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


def start(prefix: Path, ports: Ports, timeout: float = 10.0, **render_args) -> int:
    """Start nginx (daemonised, pid under prefix) for `ports`; its master's pid once it listens."""
    binary = nginx_bin()
    config = prepare(prefix, ports, **render_args)
    prefix = config.parent
    check = subprocess.run([binary, "-t", "-q", "-p", str(prefix), "-e", "stderr", "-c", str(config)],
                           capture_output=True, text=True)
    if check.returncode != 0:
        raise ProxyError(f"nginx rejected {config}:\n{check.stderr.strip()}")
    result = subprocess.run([binary, "-p", str(prefix), "-e", "stderr", "-c", str(config)],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL, start_new_session=True)
    if result.returncode != 0:
        raise ProxyError(f"nginx did not start ({result.returncode}): {result.stderr.strip()}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        number = pid(prefix)
        if number is not None:
            return number
        time.sleep(0.05)
    raise ProxyError(f"nginx started but wrote no pid file in {timeout:g} s; see {prefix / 'logs' / 'error.log'}")


def stop(prefix: Path, timeout: float = PROXY.drain_timeout_s + 5.0) -> bool:
    """Graceful stop: nginx stops accepting, lets in-flight requests finish (SIGQUIT), then exits;
    after `timeout` it is killed. True when one was running."""
    number = pid(prefix)
    if number is None:
        return False
    try:
        process = psutil.Process(number)
        process.send_signal(signal.SIGQUIT)
        process.wait(timeout)
    except psutil.TimeoutExpired:
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
        if args.write:
            print(prepare(args.prefix, Ports.from_env(), listen_address=listen, container=production))
        else:
            sys.stdout.write(render(Ports.from_env(), args.prefix.resolve(), listen_address=listen,
                                    container=production))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
