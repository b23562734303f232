"""A stub HTTP backend on loopback for tests of the proxy alone: nginx in front of it, no TorchServe."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

from settings.ports import HOST

HELD_S = 1.0     # how long the stub backend holds a request whose path ends in /slow


class Backend(ThreadingHTTPServer):
    """Answers every request 200 JSON, after HELD_S when the path says /slow; keeps what it was sent."""
    daemon_threads = True

    def __init__(self, port: int):
        self.seen: list[tuple[str, dict[str, str]]] = []
        super().__init__((HOST, port), BackendHandler)


class BackendHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: with Nagle, 40 ms each behind a delayed ACK

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.seen.append((self.requestline, {k.lower(): v for k, v in self.headers.items()}))
        if self.path.endswith("/slow"):
            time.sleep(HELD_S)
        body = b'{"0": 1.0}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args):  # quiet
        pass


@contextmanager
def backend_running(port: int) -> Iterator[Backend]:
    """The stub backend on HOST:port for the `with` block."""
    backend = Backend(port)
    thread = threading.Thread(target=backend.serve_forever, daemon=True)
    thread.start()
    try:
        yield backend
    finally:
        backend.shutdown()
        backend.server_close()
