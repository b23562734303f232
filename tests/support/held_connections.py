"""TEST ONLY: many raw TCP connections to a loopback server, held open from one thread, each timed
until the server closes it (tests/e2e/test_proxy_hostile.py: slowloris, half-sent bodies, idle crowds).

    with Watcher(deadline_s=40) as watcher:
        for held in open_connections(port, 200, b"POST /x HTTP/1.1\\r\\n", label="slowloris",
                                     trickle=b"X-Slow: 1\\r\\n", every_s=3):
            watcher.add(held)
        ...
        watcher.wait_closed(timeout=20)
    [held.open_s for held in watcher.held]   # seconds from the last byte sent to the server's close

One thread and one epoll selector watch them all: what the server sends is kept (its first 4 KB),
EOF or a reset marks the close. Everything is bounded: the watcher gives up at its deadline, and
on leaving the `with` block every socket is closed, whether the server closed it or not.
"""
from __future__ import annotations

import queue
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

KEEP_BYTES = 4096


@dataclass(eq=False)
class Held:
    """One connection: what was sent, what came back, and when the server closed it."""
    label: str
    sock: socket.socket
    ready_at: float                   # monotonic time its last byte was sent (trickles move it on)
    opened_at: float = 0.0            # monotonic time it connected
    trickle: bytes | None = None      # sent again every `every_s` while it stays open
    every_s: float = 3.0
    closed_at: float | None = None
    how: str = ""                     # "eof", "reset", or "" while open
    received: bytes = b""
    trickles: int = 0
    _next_trickle: float = field(default=0.0, repr=False)

    @property
    def open_s(self) -> float | None:
        """Seconds from the last byte this client sent to the server's close (None: still open)."""
        return None if self.closed_at is None else self.closed_at - self.ready_at

    @property
    def lifetime_s(self) -> float | None:
        """Seconds from connect to the server's close (None: still open)."""
        return None if self.closed_at is None else self.closed_at - self.opened_at

    @property
    def status_line(self) -> str:
        """The first line the server sent, if any ("HTTP/1.1 100 Continue")."""
        return self.received.split(b"\r\n", 1)[0].decode("latin-1") if self.received else ""


def open_connections(port: int, count: int, first: bytes | list = b"", *, label: str, host: str = "127.0.0.1",
                     trickle: bytes | None = None, every_s: float = 3.0, timeout: float = 10.0) -> list[Held]:
    """`count` connections to host:port, each sent `first` whole (bytes, or a list of bytes-like parts;
    blocking, at most `timeout` s per send), then left non-blocking for a Watcher. On an error the
    ones opened so far are closed."""
    parts = [first] if isinstance(first, bytes) else list(first)
    opened: list[Held] = []
    try:
        for _ in range(count):
            opened_at = time.monotonic()
            sock = socket.create_connection((host, port), timeout=timeout)
            held = Held(label, sock, opened_at, opened_at=opened_at, trickle=trickle, every_s=every_s)
            opened.append(held)
            for part in parts:
                sock.sendall(part)
            held.ready_at = time.monotonic()
            held._next_trickle = held.ready_at + every_s
            sock.setblocking(False)
    except BaseException:
        for held in opened:
            held.sock.close()
        raise
    return opened


class Watcher:
    """Watches Held connections in one thread until the server closes each (or the deadline)."""

    def __init__(self, deadline_s: float):
        self.deadline = time.monotonic() + deadline_s
        self.held: list[Held] = []
        self._incoming: queue.SimpleQueue[Held] = queue.SimpleQueue()
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._open = 0
        self._thread = threading.Thread(target=self._run, name="held-connections", daemon=True)

    def add(self, held: Held) -> None:
        with self._changed:
            self.held.append(held)
            self._open += 1
        self._incoming.put(held)

    def add_all(self, helds: list[Held]) -> list[Held]:
        for held in helds:
            self.add(held)
        return helds

    def still_open(self, label: str | None = None) -> int:
        return sum(1 for held in list(self.held) if held.closed_at is None and label in (None, held.label))

    def wait_closed(self, timeout: float) -> bool:
        """Until the server has closed every connection added so far (or `timeout`); True if it has."""
        end = min(time.monotonic() + timeout, self.deadline)
        with self._changed:
            while self._open and time.monotonic() < end:
                self._changed.wait(min(0.2, max(0.0, end - time.monotonic())))
            return self._open == 0

    def _closed(self, held: Held, how: str, now: float) -> None:
        held.closed_at, held.how = now, how
        try:
            self._selector.unregister(held.sock)
        except (KeyError, ValueError):
            pass
        with self._changed:
            self._open -= 1
            self._changed.notify_all()

    def _read(self, held: Held, now: float) -> None:
        try:
            data = held.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:  # ECONNRESET: nginx's reset_timedout_connection
            self._closed(held, "reset", now)
            return
        if not data:
            self._closed(held, "eof", now)
        elif len(held.received) < KEEP_BYTES:
            held.received += data[:KEEP_BYTES - len(held.received)]

    def _trickle(self, now: float) -> None:
        for held in self.held:
            if held.trickle is None or held.closed_at is not None or now < held._next_trickle:
                continue
            try:
                held.sock.send(held.trickle)
                held.trickles += 1
            except BlockingIOError:
                pass
            except OSError:
                continue  # closed by the server: the read reports it
            held._next_trickle = now + held.every_s

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self.deadline:
            while True:
                try:
                    held = self._incoming.get_nowait()
                except queue.Empty:
                    break
                self._selector.register(held.sock, selectors.EVENT_READ, held)
            events = self._selector.select(timeout=0.05) if self._selector.get_map() else []
            if not events:
                self._stop.wait(0.01 if self._selector.get_map() else 0.05)
            now = time.monotonic()
            for key, _ in events:
                self._read(key.data, now)
            self._trickle(now)

    def __enter__(self) -> "Watcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._selector.close()
        for held in self.held:
            held.sock.close()


@dataclass
class Reply:
    """What one raw exchange got: a parsed HTTP answer (status None: none came) and how it ended."""
    status: int | None
    headers: dict[str, str]
    body: bytes
    raw: bytes
    seconds: float
    ended: str  # "complete" (a whole answer), "eof", "reset" or "timeout"

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def _parse(raw: bytes) -> tuple[int | None, dict[str, str], bytes, bool]:
    """(status, headers, body, complete) of the first non-1xx answer in `raw`."""
    while True:
        head, sep, rest = raw.partition(b"\r\n\r\n")
        if not sep or not head.startswith(b"HTTP/"):
            return None, {}, b"", False
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            return None, {}, b"", False
        if 100 <= status < 200:  # 100 Continue: the real answer follows
            raw = rest
            continue
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = headers.get("content-length")
        complete = length is not None and length.isdigit() and len(rest) >= int(length)
        return status, headers, rest[:int(length)] if complete else rest, complete


def exchange(port: int, request: bytes | list[bytes], *, host: str = "127.0.0.1", timeout: float = 5.0) -> Reply:
    """Send raw bytes (all parts, in order) on a new connection and read the answer until it is whole
    (by its Content-Length), the server closes, or `timeout` passes; the socket is closed after."""
    started = time.monotonic()
    raw, ended = b"", "timeout"
    with socket.create_connection((host, port), timeout=timeout) as sock:
        try:
            for part in [request] if isinstance(request, bytes) else request:
                sock.sendall(part)
        except OSError:  # the server answered and closed before it read everything (a 413)
            pass
        while time.monotonic() - started < timeout:
            sock.settimeout(max(0.01, timeout - (time.monotonic() - started)))
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            except OSError:
                ended = "reset"
                break
            if not data:
                ended = "eof"
                break
            raw += data
            if _parse(raw)[3]:
                ended = "complete"
                break
    status, headers, body, _ = _parse(raw)
    return Reply(status, headers, body, raw, time.monotonic() - started, ended)
