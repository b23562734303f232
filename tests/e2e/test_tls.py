"""TLS at the proxy, tried as a client and as an attacker would, on loopback: nginx alone before the
stub backend (tests/support/stub_backend.py) with a local CA's certificate (serving/tls.py), and
one real server as `make serve-secure` starts it.
"""
from __future__ import annotations

import json
import shutil
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
import requests

from handlers.contract import check_error
from serving import proxy
from serving.tls import local_certificates
from settings.ports import HOST, Ports
from settings.proxy import PROXY
from tests.support.held_connections import exchange
from tests.support.stub_backend import HELD_S, backend_running

pytestmark = pytest.mark.e2e

READ_TIMEOUT_S = 2  # rendered short here: a stalled handshake is closed after it
MARGIN_S = 2.0
PREDICT = "/predictions/lenet5"
HANDSHAKES = 200


@pytest.fixture(scope="module")
def tls_edge(tmp_path_factory):
    """nginx speaking HTTPS (read timeout READ_TIMEOUT_S) before the stub backend; its files."""
    ports = Ports.free()
    prefix = tmp_path_factory.mktemp("proxy")
    files = local_certificates(tmp_path_factory.mktemp("tls"))
    with backend_running(ports.backend_inference) as backend:
        proxy.start(prefix, ports, limits=replace(PROXY, read_timeout_s=READ_TIMEOUT_S), tls=files)
        try:
            yield ports, backend, prefix, files
        finally:
            proxy.stop(prefix)


def client_context(ca, minimum=ssl.TLSVersion.TLSv1_2, maximum=ssl.TLSVersion.MAXIMUM_SUPPORTED,
                   ciphers: str | None = None) -> ssl.SSLContext:
    """A client that would speak the versions and ciphers given, down to what OpenSSL can (security
    level 0), so that a refusal is the server's."""
    context = ssl.create_default_context(cafile=str(ca))
    context.set_ciphers(ciphers or "DEFAULT:@SECLEVEL=0")
    context.minimum_version, context.maximum_version = minimum, maximum
    return context


def handshake(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection((HOST, port), timeout=5)
    return context.wrap_socket(raw, server_hostname="localhost")


def https_post(port: int, context: ssl.SSLContext, path: str = PREDICT) -> tuple[int, bytes]:
    with handshake(port, context) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\n"
                     f"Content-Length: 1\r\nConnection: close\r\n\r\nx".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_tls_1_2_and_1_3_are_served_with_the_local_ca(tls_edge, version):
    ports, _, _, files = tls_edge
    context = client_context(files.ca, minimum=version, maximum=version)
    with handshake(ports.inference, context) as sock:
        assert sock.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
    assert https_post(ports.inference, context)[0] == 200
    response = requests.get(f"https://localhost:{ports.inference}/", verify=str(files.ca), timeout=5)
    assert response.status_code == 200 and "<html" in response.text.lower()  # the page, over the same TLS


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_a_downgrade_to_tls_1_0_or_1_1_is_refused_by_the_server(tls_edge, version):
    ports, backend, _, files = tls_edge
    before = len(backend.seen)
    with pytest.raises(ssl.SSLError) as refused:
        handshake(ports.inference, client_context(files.ca, minimum=version, maximum=version))
    # the server's alert, not our client's own refusal (security level 0 lets it offer the old versions)
    assert "ALERT_PROTOCOL_VERSION" in refused.value.reason or "UNSUPPORTED_PROTOCOL" in refused.value.reason, \
        refused.value
    assert len(backend.seen) == before


def test_a_weak_tls_1_2_cipher_is_refused(tls_edge):
    """RSA key exchange and CBC (AES128-SHA): no forward secrecy, not in the policy."""
    ports, _, _, files = tls_edge
    context = client_context(files.ca, maximum=ssl.TLSVersion.TLSv1_2, ciphers="AES128-SHA:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError) as refused:
        handshake(ports.inference, context)
    assert "HANDSHAKE_FAILURE" in refused.value.reason or "NO_SHARED_CIPHER" in refused.value.reason, refused.value


@pytest.mark.parametrize("port_name", ["inference", "metrics"])
def test_plain_http_to_a_tls_port_gets_a_json_400(tls_edge, port_name):
    ports, backend, _, _ = tls_edge
    before = len(backend.seen)
    reply = exchange(getattr(ports, port_name), f"GET /ping HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
                     .encode())
    assert reply.status == 400, reply.raw[:300]
    assert check_error(json.loads(reply.body), 400) == "plain_http_to_https_port"
    assert len(backend.seen) == before


def test_a_stalled_handshake_is_closed_within_the_read_timeout(tls_edge):
    """Half a ClientHello, then silence: closed when the read timeout passes, not held."""
    ports, _, _, _ = tls_edge
    started = time.monotonic()
    with socket.create_connection((HOST, ports.inference), timeout=READ_TIMEOUT_S + MARGIN_S + 5) as sock:
        sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's first 11 bytes
        try:
            closed = sock.recv(1024) == b""
        except ConnectionResetError:
            closed = True
    held = time.monotonic() - started
    print(f"\nstalled TLS handshake closed after {held:.2f} s (read timeout {READ_TIMEOUT_S} s)")
    assert closed and held < READ_TIMEOUT_S + MARGIN_S, held


def test_many_handshakes_without_requests_cost_good_clients_nothing(tls_edge):
    """HANDSHAKES connections finish the TLS handshake and then send nothing, all held at once: good
    requests on new connections are answered meanwhile, and each idle one is closed after the read
    timeout."""
    ports, _, _, files = tls_edge
    context = client_context(files.ca)
    with ThreadPoolExecutor(16) as pool:
        idle = list(pool.map(lambda _: handshake(ports.inference, context), range(HANDSHAKES)))
    try:
        started = time.monotonic()
        statuses = [https_post(ports.inference, context)[0] for _ in range(10)]
        good_s = time.monotonic() - started
        assert statuses == [200] * 10 and good_s < 10 * 1.0, good_s
        time.sleep(READ_TIMEOUT_S + MARGIN_S)
        closed = 0
        for sock in idle:
            sock.settimeout(0.5)
            try:
                closed += sock.recv(1) == b""
            except (ConnectionResetError, ssl.SSLError):
                closed += 1
            except TimeoutError:
                pass
        print(f"\n{HANDSHAKES} idle TLS connections: 10 good requests in {good_s:.2f} s; "
              f"{closed} closed after the read timeout")
        assert closed == HANDSHAKES
    finally:
        for sock in idle:
            sock.close()


def test_a_new_certificate_is_taken_without_dropping_a_request(tmp_path):
    """The certificate files change (a Secret's new version), nginx reloads: a request in flight on
    the old certificate is answered, and new connections get the new one. A proxy of its own."""
    ports = Ports.free()
    files = local_certificates(tmp_path / "tls")
    newer = local_certificates(tmp_path / "newer")  # another CA, another certificate
    with backend_running(ports.backend_inference):
        proxy.start(tmp_path / "proxy", ports, tls=files)
        try:
            with ThreadPoolExecutor(1) as pool:
                in_flight = pool.submit(https_post, ports.inference, client_context(files.ca), f"{PREDICT}/slow")
                time.sleep(HELD_S / 4)
                shutil.copyfile(newer.certificate, files.certificate)
                shutil.copyfile(newer.key, files.key)
                assert proxy.reload(tmp_path / "proxy")
                assert in_flight.result(timeout=10)[0] == 200
            deadline = time.monotonic() + 5
            while True:  # the new workers take new connections once they have started
                try:
                    handshake(ports.inference, client_context(newer.ca)).close()
                    break
                except ssl.SSLCertVerificationError:
                    assert time.monotonic() < deadline, "the new certificate was not served within 5 s"
                    time.sleep(0.1)
            with pytest.raises(ssl.SSLCertVerificationError):
                handshake(ports.inference, client_context(files.ca))  # the old CA no longer vouches
        finally:
            proxy.stop(tmp_path / "proxy")
