"""API keys and rate limits at the proxy (serving/api_keys.py), tried as clients and attackers would,
on loopback: nginx alone before the stub backend (tests/support/stub_backend.py), with a keys file of
three keys, then one real server as `make serve-secure` starts it.
"""
from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from handlers.contract import check_error
from reliability import probe
from serving import proxy
from serving.api_keys import ApiKeys
from serving.launcher import example, secure_keys
from serving.server import running
from settings.ports import HOST, Ports
from settings.proxy import KEYS
from tests.support.held_connections import exchange
from tests.support.paths import MODEL_STORE
from tests.support.stub_backend import backend_running

pytestmark = pytest.mark.e2e

PREDICT = "/predictions/lenet5"
SLOW_RATE, SLOW_BURST = 5, 5      # the "hammer" key's rate: 64 clients on it must see 429s
HAMMERERS, HAMMER_S = 64, 2.0


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """nginx with three keys: `all` (every model), `lenet` (lenet5 only), `hammer` (SLOW_RATE/s)."""
    folder = tmp_path_factory.mktemp("keys")
    keys = ApiKeys()
    secret = {"all": keys.add("all"), "lenet": keys.add("lenet", ("lenet5",)),
              "hammer": keys.add("hammer", (), SLOW_RATE, SLOW_BURST)}
    keys_file = folder / "api_keys.json"
    keys.save(keys_file)
    ports = Ports.free()
    prefix = folder / "proxy"
    with backend_running(ports.backend_inference) as backend:
        proxy.start(prefix, ports, keys_file=keys_file)
        try:
            yield ports, backend, prefix, secret, keys_file
        finally:
            proxy.stop(prefix)


def post(ports: Ports, key: str | None = None, path: str = PREDICT, session=None, headers=None) -> requests.Response:
    sender = session or requests
    sent = {"Content-Type": "image/png", **({"Authorization": f"Bearer {key}"} if key else {}), **(headers or {})}
    return sender.post(f"http://{HOST}:{ports.inference}{path}", data=b"x", headers=sent, timeout=10)


def assert_json(response: requests.Response, status: int, code: str):
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers["Content-Type"] == "application/json"
    assert check_error(response.json(), status) == code


def test_a_valid_key_passes_and_its_name_is_logged_never_the_key(keyed):
    ports, backend, prefix, secret, _ = keyed
    assert post(ports, secret["all"]).status_code == 200
    assert post(ports, secret["lenet"]).status_code == 200
    time.sleep(1.5)  # the access log is flushed every second
    log = (prefix / "logs" / "access.log").read_text()
    assert "key=all" in log and "key=lenet" in log
    assert not any(key in log for key in secret.values())


@pytest.mark.parametrize("how", ["no key", "a wrong key", "no Bearer", "the key in the URL", "an empty key"])
def test_without_a_valid_key_the_answer_is_a_json_401_that_never_reaches_the_backend(keyed, how):
    ports, backend, prefix, secret, _ = keyed
    before = len(backend.seen)
    if how == "no key":
        response = post(ports)
    elif how == "a wrong key":
        response = post(ports, secret["all"][:-1] + "x")
    elif how == "no Bearer":
        response = post(ports, headers={"Authorization": secret["all"]})
    elif how == "the key in the URL":
        response = post(ports, path=f"{PREDICT}?api_key={secret['all']}&access_token={secret['all']}")
    else:
        response = post(ports, headers={"Authorization": "Bearer "})
    assert_json(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert len(backend.seen) == before
    time.sleep(1.1)
    assert secret["all"] not in (prefix / "logs" / "access.log").read_text()  # not even from the URL


def test_a_huge_authorization_header_is_a_json_400(keyed):
    ports, backend, _, _ = keyed[:4]
    reply = exchange(ports.inference, (f"POST {PREDICT} HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer "
                                       f"{'k' * 20_000}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx").encode())
    assert reply.status == 400 and check_error(json.loads(reply.body), 400) == "headers_too_large", reply.raw[:300]


def test_a_key_for_another_model_is_a_json_403(keyed):
    ports, backend, _, secret, _ = keyed
    before = len(backend.seen)
    assert_json(post(ports, secret["lenet"], path="/predictions/mnist_net"), 403, "forbidden_model")
    assert_json(post(ports, secret["lenet"], path="/explanations/fashion_mlp"), 403, "forbidden_model")
    assert post(ports, secret["all"], path="/predictions/mnist_net").status_code == 200
    assert len(backend.seen) == before + 1


def test_a_missing_and_a_wrong_key_take_the_same_time(keyed):
    """Both hash a token (the empty one when missing) and look the hash up: no timing tells them apart
    beyond the noise of loopback HTTP."""
    ports, _, _, secret, _ = keyed
    times = {"missing": [], "wrong": []}
    with requests.Session() as session:
        for i in range(400):
            kind = "missing" if i % 2 else "wrong"
            started = time.perf_counter()
            response = post(ports, None if kind == "missing" else "x" * 43, session=session)
            times[kind].append(time.perf_counter() - started)
            assert response.status_code == 401
    medians = {kind: statistics.median(values) * 1e3 for kind, values in times.items()}
    print(f"\n401 medians over 200 requests each: missing {medians['missing']:.3f} ms, wrong {medians['wrong']:.3f} ms")
    assert abs(medians["missing"] - medians["wrong"]) < 0.25 * max(medians.values()), medians


def test_64_clients_hammering_one_key_get_429s_while_another_key_keeps_its_latency(keyed):
    """The hammer key's 64 clients, each on its own connection (spreading over connections changes
    nothing: the limit is the key's), for HAMMER_S; another key sends one request at a time meanwhile."""
    ports, _, _, secret, _ = keyed

    def baseline(n: int) -> list[float]:
        out = []
        with requests.Session() as session:
            for _ in range(n):
                started = time.perf_counter()
                assert post(ports, secret["all"], session=session).status_code == 200
                out.append(time.perf_counter() - started)
        return out

    quiet = statistics.median(baseline(50))
    deadline = time.monotonic() + HAMMER_S

    def hammer(_):
        counts = {}
        with requests.Session() as session:
            while time.monotonic() < deadline:
                response = post(ports, secret["hammer"], session=session)
                counts[response.status_code] = counts.get(response.status_code, 0) + 1
                if response.status_code == 429:
                    assert response.headers["Retry-After"] == "1"
                    assert check_error(response.json(), 429) == "rate_limited"
        return counts

    with ThreadPoolExecutor(HAMMERERS + 1) as pool:
        hammering = [pool.submit(hammer, i) for i in range(HAMMERERS)]
        time.sleep(0.3)
        other = pool.submit(baseline, 50).result()
        totals = {}
        for future in hammering:
            for status, count in future.result().items():
                totals[status] = totals.get(status, 0) + count
    busy = statistics.median(other)
    allowed = SLOW_BURST + SLOW_RATE * (HAMMER_S + 1)
    print(f"\n{HAMMERERS} clients on one key ({SLOW_RATE}/s, burst {SLOW_BURST}) for {HAMMER_S:g} s: {totals}; "
          f"another key's median {quiet * 1e3:.2f} ms alone, {busy * 1e3:.2f} ms meanwhile")
    assert set(totals) == {200, 429} and totals[200] <= allowed, totals
    assert busy < max(5 * quiet, 0.05), (quiet, busy)


def test_a_removed_key_is_refused_after_a_reload_without_a_restart(keyed):
    ports, _, prefix, secret, keys_file = keyed
    keys = ApiKeys.load(keys_file)
    new_key = keys.add("rotated")
    keys.save(keys_file)
    master = proxy.pid(prefix)
    assert proxy.refresh(prefix) and proxy.pid(prefix) == master
    deadline = time.monotonic() + 5
    while post(ports, new_key).status_code != 200:
        assert time.monotonic() < deadline, "the new key was not taken within 5 s"
        time.sleep(0.1)
    keys.remove("rotated")
    keys.save(keys_file)
    assert proxy.refresh(prefix)
    deadline = time.monotonic() + 5
    while post(ports, new_key).status_code != 401:
        assert time.monotonic() < deadline, "the removed key still passed after 5 s"
        time.sleep(0.1)
    assert post(ports, secret["all"]).status_code == 200


def test_ping_and_the_page_stay_open(keyed):
    ports, backend, _, _, _ = keyed
    assert requests.get(f"http://{HOST}:{ports.inference}/", timeout=5).status_code == 200
    assert requests.get(f"http://{HOST}:{ports.inference}/ping", timeout=5).status_code == 200


def test_make_serve_secure_prints_a_development_key_that_works_over_https(tmp_path):
    """`make serve-secure`: HTTPS with the local CA and API keys at the proxy, a development key made
    on first use and printed with the CA file, its hash kept in the keys file."""
    keys_file = tmp_path / "run" / "api_keys.json"
    created = secure_keys(keys_file)
    assert created and created not in keys_file.read_text()
    assert secure_keys(keys_file) is None  # made once; its hash stays
    with running(run_dir=tmp_path / "run", model_store=MODEL_STORE, ports=Ports.free(), timeout=180,
                 tls=True, api_keys=keys_file) as server:
        ca = str(server.tls_files.ca)
        printed = example(server, created)
        assert f"--cacert {ca}" in printed and f"Bearer {created}" in printed and str(keys_file) in printed
        url = f"{server.inference_url}{PREDICT}"
        answer = requests.post(url, data=probe.digit_png(), verify=ca, timeout=30,
                               headers={"Content-Type": "image/png", "Authorization": f"Bearer {created}"})
        assert answer.status_code == 200 and answer.json()["model"] == "lenet5", answer.text[:300]
        refused = requests.post(url, data=probe.digit_png(), verify=ca, timeout=30, headers={"Content-Type": "image/png"})
        assert_json(refused, 401, "unauthorized")
    assert KEYS.rate_per_s >= 1 and Path(keys_file).stat().st_mode & 0o077 == 0
