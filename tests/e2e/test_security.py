"""Security, end to end: what listens where, no model registration from URLs, token auth and its
key rotation, hostile requests refused in bounded time and memory. Figures go to RELIABILITY.md.

Servers (all traffic to 127.0.0.1 only):
- the session `server` (local profile, tests/conftest.py);
- `shipped`: the production profile with token auth on (it binds inference and metrics to
  0.0.0.0 as in the container; the test only talks to 127.0.0.1);
- `model_api_on`: local profile with the model API turned on (never shipped), to check that
  `allowed_urls` refuses the URLs too, with a loopback HTTP server that records whether
  TorchServe ever fetched anything.
Each on ports the OS says are free. The rendered configs, without a server: tests/unit/test_security_config.py.
"""
from __future__ import annotations

import http.server
import ipaddress
import shutil
import stat
import threading
from contextlib import ExitStack
from pathlib import Path

import psutil
import pytest
import requests

from reliability import hostile, probe
from serving.server import LaunchError, running
from settings.model_serving import SERVING
from settings.ports import HOST, Ports
from tests.support.hostile_urls import traversal_urls
from tests.support.paths import MODEL_STORE
from tests.support.slow_model import store_with_slow_model

TOKEN_REFUSED = "InvalidKeyException"


# ---- live servers ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    with ExitStack() as stack:
        try:
            srv = stack.enter_context(running(run_dir=tmp_path_factory.mktemp("shipped"), model_store=MODEL_STORE,
                                              ports=Ports.free(), timeout=180, profile="production", token_auth=True))
        except LaunchError as err:
            pytest.fail(f"the production-profile server did not start: {err}")
        yield srv


class Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):
        Recorder.hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args):
        pass


def listening_addresses(port: int) -> set[str]:
    """The local IP addresses with a TCP socket listening on `port`; IPv4-mapped IPv6 addresses
    (Java's [::ffff:127.0.0.1]) are given as IPv4."""
    found = set()
    for connection in psutil.net_connections(kind="tcp"):
        if connection.status != psutil.CONN_LISTEN or connection.laddr.port != port:
            continue
        ip = ipaddress.ip_address(connection.laddr.ip.split("%", 1)[0])
        if ip.version == 6 and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        found.add(str(ip))
    return found


@pytest.fixture(scope="module")
def bait():
    """A loopback HTTP server that records every request: TorchServe must never fetch from it."""
    httpd = http.server.HTTPServer((HOST, 0), Recorder)  # a port the OS says is free
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Recorder.hits.clear()
    yield f"http://{HOST}:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def registration_attempts(bait_url: str, store: Path) -> list[str]:
    return [f"{bait_url}/evil.mar", f"{bait_url.replace('http:', 'https:')}/evil.mar", "file:///etc/passwd",
            "file:///etc/shadow", "/etc/passwd", "../../../../etc/passwd", *traversal_urls(store)]


@pytest.mark.e2e
def test_management_port_listens_on_loopback_only(server, shipped):
    for srv, profile in ((server, "local"), (shipped, "production")):
        assert listening_addresses(srv.ports.management) == {"127.0.0.1"}, profile
        assert listening_addresses(srv.ports.grpc_management) == {"127.0.0.1"}, profile
        assert listening_addresses(srv.ports.grpc_inference) == {"127.0.0.1"}, profile
        # TorchServe itself is behind the proxy on loopback, in production too (serving/proxy.py)
        assert listening_addresses(srv.ports.backend_inference) == {"127.0.0.1"}, profile
        assert listening_addresses(srv.ports.backend_metrics) == {"127.0.0.1"}, profile
    assert listening_addresses(server.ports.inference) == {"127.0.0.1"}
    # production's proxy serves inference on every address (the container's Service routes to it)
    public = listening_addresses(shipped.ports.inference)
    assert public and public <= {"0.0.0.0", "::"}, public


@pytest.mark.e2e
def test_model_registration_from_a_url_is_refused(server, shipped, bait):
    for srv in (server, shipped):
        for url in registration_attempts(bait, MODEL_STORE.resolve()):
            response = requests.post(f"{srv.management_url}/models", params={"url": url},
                                     headers=srv.auth("management"), timeout=30)
            assert response.status_code == 405, (url, response.status_code, response.text[:200])
            assert response.json()["type"] == "MethodNotAllowedException"
        listed = requests.get(f"{srv.management_url}/models", headers=srv.auth("management"), timeout=10).json()
        assert sorted(m["modelName"] for m in listed["models"]) == sorted(SERVING)
    assert Recorder.hits == []


@pytest.mark.e2e
def test_allowed_urls_refuses_them_even_with_the_model_api_on(tmp_path, bait):
    """Defence in depth: a config that turned the model API on would still not fetch from the
    network, read /etc or leave the model store, even for a real archive one `..` outside it;
    an archive directly in the store passes the rule (it does not simply refuse everything).
    Keep the model API off all the same: it is the first line."""
    store = (tmp_path / "store").resolve()
    store_with_slow_model(store, MODEL_STORE)  # a private store: a registration could write to it
    slow = store / "lenet5_slow.mar"           # in the store, not loaded
    shutil.copy(slow, tmp_path / "evil.mar")   # the target of file://<store>/../evil.mar and its %2e form
    in_store = sorted(p.name for p in store.iterdir())
    with running(run_dir=tmp_path / "run", model_store=store, ports=Ports.free(), timeout=180,
                 extra={"enable_model_api": "true"}) as srv:
        models = f"{srv.management_url}/models"
        for url in registration_attempts(bait, store):
            # requests encodes '%' as %25: TorchServe receives the literal %2e%2e, as a hand-built URL would
            response = requests.post(models, params={"url": url, "initial_workers": 0}, timeout=30)
            assert response.status_code == 404, (url, response.status_code, response.text[:200])
            message = response.json()["message"]
            print(f"\n{url}: {response.status_code} {message[:120]}", end="")
            assert any(s in message for s in ("does not match any allowed URL", "Relative path is not allowed",
                                              "Model not found")), message
            if "%2e" in url:  # past TorchServe's ".." check: only allowed_urls stands in the way
                assert "does not match any allowed URL" in message, message
        listed = requests.get(models, timeout=10).json()["models"]
        assert sorted(m["modelName"] for m in listed) == sorted(SERVING)
        assert sorted(p.name for p in store.iterdir()) == in_store, "a refused URL wrote to the model store"
        # an archive in the store passes `allowed_urls`: TorchServe goes on to copy it into the store,
        # where it already is (ArchiveUtils.downloadArchive checks the URL first)
        admitted = requests.post(models, params={"url": f"file://{slow}", "initial_workers": 0}, timeout=60)
        assert "Model file already exists lenet5_slow.mar" in admitted.json()["message"], admitted.text[:300]
    assert Recorder.hits == []


# ---- token auth --------------------------------------------------------------------------------
@pytest.mark.e2e
def test_requests_without_the_key_are_refused_and_with_it_accepted(shipped):
    keys = shipped.keys()
    assert set(keys) == {"management", "inference", "API"}
    assert stat.S_IMODE(shipped.key_file.stat().st_mode) == 0o600
    predict = f"{shipped.inference_url}/predictions/lenet5"
    body = probe.digit_png()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": keys["inference"]},
                    {"Authorization": f"Bearer {keys['management']}"}):
        refused = probe.post(predict, body, headers)
        assert refused.status == 400 and refused.json()["type"] == TOKEN_REFUSED, (headers, refused.body[:200])
    assert requests.get(f"{shipped.inference_url}/ping", timeout=10).status_code == 400
    for headers in ({}, {"Authorization": f"Bearer {keys['inference']}"}):
        refused = requests.get(f"{shipped.management_url}/models", headers=headers, timeout=10)
        assert refused.status_code == 400 and refused.json()["type"] == TOKEN_REFUSED
    accepted = probe.post(predict, body, shipped.auth("inference"))
    assert accepted.status == 200 and accepted.json()["model"] == "lenet5"
    assert requests.get(f"{shipped.management_url}/models", headers=shipped.auth("management"),
                        timeout=10).status_code == 200


@pytest.mark.e2e
def test_keys_rotate_through_the_token_api(shipped):
    """POST /token?type=inference|management on the management port, with the API key: a new key
    in key_file.json, the old one refused from then on."""
    predict = f"{shipped.inference_url}/predictions/lenet5"
    body = probe.digit_png()
    old = shipped.keys()
    wrong = requests.post(f"{shipped.management_url}/token", params={"type": "inference"},
                          headers={"Authorization": f"Bearer {old['inference']}"}, timeout=10)
    assert wrong.status_code == 400 and shipped.keys() == old  # only the API key may rotate keys
    for kind in ("inference", "management"):
        response = requests.post(f"{shipped.management_url}/token", params={"type": kind},
                                 headers={"Authorization": f"Bearer {old['API']}"}, timeout=10)
        assert response.status_code == 200, response.text
    new = shipped.keys()
    assert new["inference"] != old["inference"] and new["management"] != old["management"]
    assert new["API"] == old["API"]
    assert probe.post(predict, body, {"Authorization": f"Bearer {old['inference']}"}).status == 400
    assert probe.post(predict, body, shipped.auth("inference")).status == 200
    assert requests.get(f"{shipped.management_url}/models", timeout=10,
                        headers={"Authorization": f"Bearer {old['management']}"}).status_code == 400
    assert requests.get(f"{shipped.management_url}/models", headers=shipped.auth("management"),
                        timeout=10).status_code == 200


# ---- hostile requests --------------------------------------------------------------------------
CATALOGUE = {h.name: h for h in hostile.catalogue()}
MB = 2**20


def send_measured(srv, body, headers: dict, timeout: float = 60):
    """POST to lenet5 while sampling the frontend's and lenet5's workers' resident memory (the
    largest growth of any of its workers: the request reaches one of them)."""
    workers = probe.worker_pids(srv, "lenet5")
    frontend = srv.pid()
    with probe.PeakRSS([frontend, *workers]) as peak:
        answer = probe.post(f"{srv.inference_url}/predictions/lenet5", body,
                            {**headers, **srv.auth("inference")}, timeout=timeout)
    return answer, peak.growth[frontend] / MB, max(peak.growth[w] for w in workers) / MB, workers


def assert_still_serving(srv, workers: list[int]):
    answer = probe.post(f"{srv.inference_url}/predictions/lenet5", probe.digit_png(), srv.auth("inference"))
    assert answer.status == 200, answer.body[:200]
    assert probe.worker_pids(srv, "lenet5") == workers, "a worker was restarted"


@pytest.mark.e2e
@pytest.mark.parametrize("name", list(CATALOGUE))
def test_hostile_request_is_answered_in_bounded_time_and_memory(shipped, name):
    case = CATALOGUE[name]
    answer, frontend_mb, worker_mb, workers = send_measured(shipped, case.body, case.headers)
    print(f"\n{name}: {answer.status} in {answer.seconds:.3f} s, peak growth frontend {frontend_mb:.1f} MB, "
          f"worker {worker_mb:.1f} MB")
    assert answer.status == case.status, (answer.status, answer.error, answer.body[:300])
    if case.error:
        assert answer.json()["error"] == case.error
    assert answer.seconds < case.max_seconds
    assert worker_mb < case.max_worker_mb
    assert frontend_mb < case.max_frontend_mb
    assert_still_serving(shipped, workers)


@pytest.mark.e2e
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_100_mb_body_is_refused_before_it_is_read(shipped, chunked):
    size = 100 * MB
    if chunked:
        body = (b"\0" * MB for _ in range(size // MB))  # no Content-Length: the frontend counts
    else:
        body = b"\0" * size
    answer, frontend_mb, worker_mb, workers = send_measured(shipped, body, {"Content-Type": "image/png"})
    print(f"\n100 MB body ({'chunked' if chunked else 'Content-Length'}): {answer.status or answer.error} in "
          f"{answer.seconds:.3f} s, peak growth frontend {frontend_mb:.1f} MB, worker {worker_mb:.1f} MB")
    # TorchServe answers 413 without a body (or resets the upload it will not read)
    assert answer.status == 413 or (answer.status is None and "Connection" in answer.error), answer
    assert answer.seconds < 5.0
    assert frontend_mb < 64 and worker_mb < 16
    assert_still_serving(shipped, workers)
