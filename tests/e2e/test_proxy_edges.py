"""The proxy's own edges, with nginx alone in front of a stub backend on loopback (no TorchServe):
the in-flight cap, what of a request reaches the backend, nginx's own refusals in our JSON, and the
bounded, rotated logs. Hostile clients against the whole server: tests/e2e/test_proxy_hostile.py.
"""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from handlers.contract import check_error
from serving import proxy
from settings.ports import HOST, Ports
from settings.proxy import PROXY
from tests.support.held_connections import exchange
from tests.support.stub_backend import HELD_S, backend_running

pytestmark = pytest.mark.e2e

PREDICT = "/predictions/lenet5"
CAP = 4          # the in-flight cap these tests render


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    """nginx (the in-flight cap at CAP, logs rotated at 64 KiB, two files kept) before a stub backend."""
    ports = Ports.free()
    prefix = tmp_path_factory.mktemp("proxy")
    limits = replace(PROXY, max_requests_in_flight=CAP, log_file_bytes=64 * 1024, log_files_kept=2)
    with backend_running(ports.backend_inference) as backend:
        proxy.start(prefix, ports, limits=limits)
        try:
            yield ports, backend, prefix
        finally:
            proxy.stop(prefix)


def url(ports: Ports, path: str) -> str:
    return f"http://{HOST}:{ports.inference}{path}"


def assert_json_error(status: int, content_type: str, body: bytes, want: int, code: str | None = None):
    assert status == want, (status, body[:300])
    assert content_type == "application/json", (content_type, body[:300])
    got = check_error(json.loads(body), want)
    if code is not None:
        assert got == code, body


def test_the_in_flight_cap_refuses_what_is_over_it_with_a_json_503_at_once(edge):
    """The cap counted nothing while its key was the empty $server_name; now it holds: of 3 x CAP
    requests at once, CAP reach the backend and the rest get 503 overloaded without waiting."""
    ports, backend, _ = edge

    def one(_):
        started = time.monotonic()
        response = requests.post(url(ports, f"{PREDICT}/slow"), data=b"x", timeout=10,
                                 headers={"Content-Type": "image/png"})
        return response, time.monotonic() - started

    with ThreadPoolExecutor(3 * CAP) as pool:
        answers = list(pool.map(one, range(3 * CAP)))
    served = [r for r, _ in answers if r.status_code == 200]
    refused = [(r, s) for r, s in answers if r.status_code == 503]
    assert len(served) + len(refused) == 3 * CAP, [r.status_code for r, _ in answers]
    print(f"\nin-flight cap {CAP}, {3 * CAP} requests of {HELD_S:g} s at once: {len(served)} served, "
          f"{len(refused)} refused 503 in at most {max((s for _, s in refused), default=0):.3f} s")
    assert CAP <= len(served) < 3 * CAP and refused, f"{len(served)} served, {len(refused)} refused"
    for response, seconds in refused:
        assert_json_error(503, response.headers["Content-Type"], response.content, 503, "overloaded")
        assert response.headers["Retry-After"] == "1" and seconds < HELD_S, seconds


def test_the_backend_gets_the_normalised_path_no_query_and_none_of_the_clients_other_headers(edge):
    """//predictions/x read as an unknown model (the raw URI went on); a query string and any header
    reached TorchServe (Netty refuses long or odd ones in its own words). Authorization goes on: it
    is TorchServe's token auth."""
    ports, backend, _ = edge
    before = len(backend.seen)
    reply = exchange(ports.inference, (
        f"POST //predictions/lenet5?body=injected HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: image/png\r\n"
        f"Content-Length: 3\r\nCookie: {'c' * 3000}\r\nX-Anything: yes\r\nX-Request-ID: abc-1\r\n"
        f"Authorization: Bearer k1\r\n"
        f"Connection: close\r\n\r\nabc").encode())
    assert reply.status == 200, reply.raw[:300]
    line, headers = backend.seen[before]
    assert line == f"POST {PREDICT} HTTP/1.1"
    assert set(headers) == {"host", "content-length", "content-type", "x-request-id",
                            "x-forwarded-for", "authorization"}, headers
    assert headers["content-type"] == "image/png" and headers["x-request-id"] == "abc-1"
    assert headers["authorization"] == "Bearer k1"


@pytest.mark.parametrize("name, request_bytes, status, code", [
    ("an unsupported Transfer-Encoding", f"POST {PREDICT} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
     501, "not_implemented"),
    ("a POST to the metrics port", None, 405, "method_not_allowed"),
    ("a request line over the limit", f"GET /{'a' * PROXY.header_line_bytes} HTTP/1.1\r\nHost: h\r\n\r\n",
     414, "uri_too_long"),
    ("a header line over the limit", f"GET / HTTP/1.1\r\nHost: h\r\nX-Big: {'b' * PROXY.header_line_bytes}\r\n\r\n",
     400, "headers_too_large"),
    ("a Content-Type with a control character", f"POST {PREDICT} HTTP/1.1\r\nHost: h\r\n"
     "Content-Type: image/png\x01\r\nContent-Length: 1\r\n\r\nx", 400, "bad_content_type"),
    ("a Range past the file's end", "GET /index.html HTTP/1.1\r\nHost: h\r\nRange: bytes=99999999-\r\n\r\n",
     416, "range_not_satisfiable"),
    ("an If-Match naming another version", "GET /index.html HTTP/1.1\r\nHost: h\r\nIf-Match: \"nope\"\r\n\r\n",
     412, "precondition_failed"),
    ("the page's README", "GET /README.md HTTP/1.1\r\nHost: h\r\n\r\n", 404, "not_found"),
])
def test_what_nginx_refuses_itself_is_refused_in_our_json(edge, name, request_bytes, status, code):
    """Each of these got nginx's HTML page (or, past nginx, TorchServe's own body) before."""
    ports, backend, _ = edge
    if request_bytes is None:
        port, request_bytes = ports.metrics, "POST /metrics HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"
    else:
        port = ports.inference
    before = len(backend.seen)
    reply = exchange(port, request_bytes.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1).encode())
    assert_json_error(reply.status, reply.header("content-type"), reply.body, status, code)
    assert len(backend.seen) == before, f"{name} reached the backend"


def test_the_page_is_still_served(edge):
    ports, _, _ = edge
    for path in ("/", "/index.html", "/app.js", "/style.css"):
        response = requests.get(url(ports, path), timeout=5)
        assert response.status_code == 200, path


def test_the_logs_hold_a_bounded_line_per_request_and_rotate_within_their_files(edge):
    """Long URLs grew the access log by 310 MB in 8 s. Now a line keeps logged_request_chars of the
    request line, and rotatelogs keeps log_files_kept files of log_file_bytes (64 KiB here)."""
    ports, _, prefix = edge
    long_path = "/" + "x" * (PROXY.header_line_bytes - 100)
    with requests.Session() as session:
        for _ in range(400):  # ~400 x 4 KB of URLs: the unbounded log would take 1.6 MB
            assert session.get(url(ports, long_path), timeout=5).status_code == 404
    time.sleep(1.5)  # nginx flushes its access log buffer every second
    logs = Path(prefix) / "logs"
    current = (logs / "access.log").read_text().splitlines()
    assert current and max(map(len, current)) < PROXY.logged_request_chars + 300, max(map(len, current))
    rotated = sorted((logs / "rotated").glob("access.log*"))
    assert 1 < len(rotated) <= 2, rotated
    kept = sum(path.stat().st_size for path in rotated)
    print(f"\n400 requests with {len(long_path):,}-character URLs: longest access-log line {max(map(len, current))} "
          f"characters; {len(rotated)} rotated files, {kept:,} bytes in all")
    assert kept <= 2 * (64 * 1024 + 32 * 1024), kept  # each file: its size plus one 32 KB buffer write
