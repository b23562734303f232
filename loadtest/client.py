"""A small closed-loop HTTP/1.1 load generator on asyncio, the one client of every benchmark row.

Why not Locust, hey or wrk: Locust's Python cost per request would cap a 2-core machine's server it
measures; hey and wrk are cheap but cannot check answers (wrk only through Lua) and are one more
system package on every machine that runs `make bench`. This client keeps C keep-alive connections
busy, each sending its next request when the previous answer arrived (C = concurrency), over raw
asyncio protocols (no HTTP library); the benchmark measures its CPU per request and reports it per
row. Every answer is checked (status, JSON contract, top-1 label) and anything wrong is an error.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence
from urllib.parse import urlsplit

import numpy as np

# check(status, body, expected) -> None when the answer is right, else a short error kind
Check = Callable[[int, bytes, object], Optional[str]]


@dataclass(frozen=True)
class WireRequest:
    """One pre-built request: the exact bytes on the wire, what to expect, how many images."""
    wire: bytes
    expected: object
    images: int = 1


def build_request(host: str, port: int, path: str, body: bytes, content_type: str,
                  expected: object, images: int = 1, headers: dict[str, str] | None = None) -> WireRequest:
    """A keep-alive POST of `body`; `headers`: more header lines (e.g. Triton's Inference-Header-Content-Length)."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: keep-alive\r\n\r\n").encode("ascii")
    return WireRequest(head + body, expected, images)


@dataclass
class Result:
    """What one closed-loop run measured (only requests started after the warm-up count)."""
    concurrency: int
    window_s: float                     # the measuring window (after the warm-up)
    latencies_s: np.ndarray             # per right answer to a request started in the window
    completions_s: np.ndarray           # its completion time, seconds since the window opened
    images: np.ndarray                  # its number of images
    errors: Counter = field(default_factory=Counter)
    client_cpu_s: float = 0.0           # this process's CPU time over the run

    @property
    def requests(self) -> int:
        return len(self.latencies_s)

    @property
    def attempts(self) -> int:
        return self.requests + sum(self.errors.values())

    @property
    def rps(self) -> float:
        """Right answers completed inside the window, per second (the drain after it is left out)."""
        return float(np.count_nonzero(self.completions_s <= self.window_s)) / self.window_s

    @property
    def images_per_s(self) -> float:
        return float(self.images[self.completions_s <= self.window_s].sum()) / self.window_s

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1000) if self.requests else float("nan")


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one request in flight."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data: bytes):
        self.buffer += data
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        try:
            status = int(head[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            waiter.set_exception(ConnectionError(f"bad status line {head[0]!r}"))
            return
        length, close = None, False
        for line in head[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.strip().lower() == "close":
                close = True
            elif name == "transfer-encoding" and "chunked" in value.lower():
                waiter.set_exception(ConnectionError("chunked responses are not supported by this client"))
                return
        if length is None:
            length = 0
        if len(self.buffer) < end + 4 + length:
            return
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        waiter.set_result((status, body, close))

    def connection_lost(self, exc):
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc or 'closed by server'}"))

    async def send(self, wire: bytes, timeout: float):
        self.waiter = self.loop.create_future()
        timer = self.loop.call_later(timeout, _expire, self.waiter, timeout)
        self.transport.write(wire)
        try:
            return await self.waiter
        finally:
            timer.cancel()

    def close(self):
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future, timeout: float):
    if not waiter.done():
        waiter.set_exception(TimeoutError(f"no answer within {timeout:g} s"))


async def _connect(loop, host: str, port: int) -> _Connection:
    _, protocol = await loop.create_connection(lambda: _Connection(loop), host, port)
    return protocol


async def closed_loop(host: str, port: int, requests: Sequence[WireRequest], check: Check, concurrency: int,
                      duration_s: float, warmup_s: float = 0.0, timeout_s: float = 30.0,
                      max_requests: int | None = None) -> Result:
    """C connections, each sending requests back to back for warmup_s + duration_s seconds.

    Bounded in time (the duration, plus at most `timeout_s` for answers in flight) and, when
    `max_requests` is given, in count. Requests are taken round-robin from `requests`, each
    connection starting at a different offset.
    """
    if not requests:
        raise ValueError("no requests to send")
    loop = asyncio.get_running_loop()
    connections = []
    try:
        for _ in range(concurrency):
            connections.append(await _connect(loop, host, port))
    except OSError as err:
        for c in connections:
            c.close()
        raise ConnectionError(f"cannot connect to http://{host}:{port} ({err}); is the server running?") from None

    start = time.perf_counter()
    window_open = start + warmup_s
    deadline = window_open + duration_s
    latencies: list[float] = []
    completions: list[float] = []
    errors: Counter = Counter()
    images: list[int] = []
    issued = 0
    n = len(requests)

    async def worker(slot: int):
        nonlocal issued
        connection = connections[slot]
        index = (slot * n) // concurrency
        while True:
            now = time.perf_counter()
            if now >= deadline or (max_requests is not None and issued >= max_requests):
                return
            issued += 1
            request = requests[index % n]
            index += 1
            counted = now >= window_open
            try:
                if connection.closed:
                    connection = connections[slot] = await _connect(loop, host, port)
                status, body, close = await connection.send(request.wire, timeout_s)
            except (ConnectionError, TimeoutError, OSError) as err:
                if counted:
                    errors[type(err).__name__] += 1
                connection.close()
                connection.closed = True
                continue
            done = time.perf_counter()
            if close:
                connection.close()
            if not counted:
                continue
            problem = check(status, body, request.expected)
            if problem is not None:
                errors[problem] += 1
                continue
            latencies.append(done - now)
            completions.append(done - window_open)
            images.append(request.images)

    cpu_before = time.process_time()
    try:
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
    finally:
        for c in connections:
            c.close()
    cpu = time.process_time() - cpu_before
    # a count-bounded run may end before the deadline: its window is the time it took
    window = min(duration_s, max(time.perf_counter() - window_open, 1e-9))
    return Result(concurrency, window, np.asarray(latencies), np.asarray(completions),
                  np.asarray(images, dtype=np.int64), errors, cpu)


def run(url: str, requests: Sequence[WireRequest], check: Check, concurrency: int, duration_s: float,
        warmup_s: float = 0.0, timeout_s: float = 30.0, max_requests: int | None = None) -> Result:
    """Synchronous wrapper; `url` is the server's base URL (http://host:port)."""
    host, port = split_url(url)
    return asyncio.run(closed_loop(host, port, requests, check, concurrency, duration_s, warmup_s,
                                   timeout_s, max_requests))


def split_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"{url!r}: expected http://host:port (this client speaks plain HTTP/1.1)")
    return parts.hostname, parts.port or 80
