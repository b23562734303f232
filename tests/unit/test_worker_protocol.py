"""The buffered retrieve_msg decodes what TorchServe 0.12.0's decodes, object for object.

Frames are built as the Java frontend's ModelRequestEncoder writes them, then decoded by
upstream's `retrieve_msg` and by ours, over real socket pairs and over a fake socket that hands
out the bytes in awkward pieces."""
import json
import logging
import socket
import struct
import threading
import types

import pytest
import ts.model_service_worker as worker_module
from ts.protocol import otf_message_handler as upstream

from handlers import worker_protocol
from handlers.worker_logging import ReceivedLines
from handlers.worker_protocol import SocketReader

# ---- frames, as the frontend encodes them ---------------------------------------------------


def _field(data) -> bytes:
    if data is None:  # encodeField(null): length 0, no bytes
        return struct.pack("!i", 0)
    data = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    return struct.pack("!i", len(data)) + data


def load_frame(name="lenet5", path="/tmp/models/abc", batch_size=16, handler="classifier_handler.py",
               gpu=-1, envelope="", limit_pixels=True) -> bytes:
    return (b"L" + _field(name) + _field(path) + struct.pack("!i", batch_size) + _field(handler)
            + struct.pack("!i", gpu) + _field(envelope) + struct.pack("!?", limit_pixels))


def inference_frame(requests) -> bytes:
    """requests: [(request_id, [(header, value)], [(name, content_type, value bytes)])]."""
    out = bytearray(b"I")
    for request_id, headers, parameters in requests:
        out += _field(request_id)
        for name, value in headers:
            out += _field(name) + _field(value)
        out += struct.pack("!i", -1)
        for name, content_type, value in parameters:
            out += _field(name) + _field(content_type) + _field(value)
        out += struct.pack("!i", -1)
    out += struct.pack("!i", -1)
    return bytes(out)


PNG = bytes(range(256)) * 3 + b"\x89PNG tail"
HEADERS = [("Host", "127.0.0.1:8080"), ("User-Agent", "python-requests/2.32"), ("Accept", "*/*"),
           ("Content-Type", "image/png"), ("Content-Length", str(len(PNG))), ("explain", "True"),
           ("X-Utf8", "d\u00e9j\u00e0 vu")]


def request(i: int, parameters=None, headers=HEADERS):
    return (f"b7e1c0de-{i:04d}-4a6f", headers, parameters or [("body", "image/png", PNG)])


BATCHES = {
    "one png": [request(0)],
    "sixteen pngs": [request(i) for i in range(16)],
    "multipart and json": [
        request(0, [("first", "image/png", PNG), ("second", None, PNG), ("note", "text/plain", b"hello")]),
        request(1, [("body", "application/json", json.dumps({"instances": ["aGk=", {"pixels": [[0, 1]]}]}).encode())]),
        request(2, [("body", "application/json", b"{not json")]),          # forwarded as bytes, warned
        request(3, [("body", "text/plain; charset=latin-1", b"caf\xe9")]),  # not utf-8: bytes, warned
        request(4, [("body", "text/csv", "\u00e9t\u00e9".encode())]),
        request(5, [("body", "", b"")], headers=[]),                       # empty everything
        request(6, [("", "application/x-npy", b"\x93NUMPY" + bytes(500))], headers=[("", "")]),
    ],
    "a large body": [request(0, [("body", "image/jpeg", bytes(range(251)) * 2000)]), request(1)],
    "empty batch": [],
}
MESSAGES = [load_frame()] + [inference_frame(batch) for batch in BATCHES.values()]


# ---- sockets ---------------------------------------------------------------------------------
class PieceSocket:
    """A socket that hands its bytes out in pieces of the given sizes (cycled), at most what is asked."""

    def __init__(self, data: bytes, pieces=(1,)):
        self.data, self.at, self.pieces, self.calls = memoryview(data), 0, pieces, 0

    def _next(self, asked: int) -> int:
        n = min(asked, self.pieces[self.calls % len(self.pieces)], len(self.data) - self.at)
        self.calls += 1
        return n

    def recv(self, asked: int) -> bytes:
        n = self._next(asked)
        self.at += n
        return bytes(self.data[self.at - n : self.at])

    def recv_into(self, view) -> int:
        n = self._next(len(view))
        view[:n] = self.data[self.at : self.at + n]
        self.at += n
        return n


def decode_all(read, conn, count: int) -> list:
    return [read(conn) for _ in range(count)]


def same(ours, theirs) -> None:
    """Equal, and of the same types all the way down (bytearray stays bytearray, str stays str)."""
    assert ours == theirs
    assert type(ours) is type(theirs)
    if isinstance(ours, dict):
        assert list(ours) == list(theirs)
        for key in ours:
            same(ours[key], theirs[key])
    elif isinstance(ours, (list, tuple)):
        for a, b in zip(ours, theirs):
            same(a, b)


@pytest.fixture(autouse=True)
def fresh_readers(monkeypatch):
    monkeypatch.setattr(worker_protocol, "_readers", worker_protocol.weakref.WeakKeyDictionary())
    monkeypatch.setattr(worker_protocol, "_last", None)
    monkeypatch.delenv("TS_DECODE_INPUT_REQUEST", raising=False)
    monkeypatch.setattr(logging.root, "filters", [])  # other tests load the handler, which adds worker_logging's


@pytest.mark.parametrize("pieces", [(1,), (3,), (4,), (5, 1, 1, 7), (1000,), (65536,), (1 << 30,)])
def test_back_to_back_messages_in_pieces_decode_as_upstream(pieces):
    stream = b"".join(MESSAGES)
    theirs = decode_all(upstream.retrieve_msg, PieceSocket(stream, pieces), len(MESSAGES))
    conn = PieceSocket(stream, pieces)
    ours = decode_all(worker_protocol.retrieve_msg, conn, len(MESSAGES))
    same(ours, theirs)
    assert conn.at == len(stream)
    assert [cmd for cmd, _ in ours] == [b"L"] + [b"I"] * len(BATCHES)


def test_one_recv_serves_many_messages():
    stream = b"".join(MESSAGES[1:3])  # two batches, 17 requests, in one recv
    conn = PieceSocket(stream, (1 << 30,))
    decode_all(worker_protocol.retrieve_msg, conn, 2)
    assert conn.calls == 1


@pytest.mark.parametrize("decode", ["true", "false"])
def test_the_decode_switch_is_upstreams(monkeypatch, decode):
    monkeypatch.setenv("TS_DECODE_INPUT_REQUEST", decode)
    frame = MESSAGES[3]
    same(worker_protocol.retrieve_msg(PieceSocket(frame, (1 << 30,))), upstream.retrieve_msg(PieceSocket(frame, (7,))))


def test_failed_decoding_warns_as_upstream(caplog):
    frame = inference_frame(BATCHES["multipart and json"])
    with caplog.at_level(logging.INFO):
        upstream.retrieve_msg(PieceSocket(frame, (1 << 30,)))
        theirs = [(r.levelno, r.getMessage()) for r in caplog.records]
        caplog.clear()
        worker_protocol.retrieve_msg(PieceSocket(frame, (1 << 30,)))
        ours = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert [m for m in ours if "Backend received" not in m[1]] == [m for m in theirs if "Backend received" not in m[1]]
    assert sum("Failed json decoding" in m for _, m in ours) == 1
    assert sum("Failed utf-8 decoding" in m for _, m in ours) == 1
    assert sum(m.startswith("Backend received inference at: ") for _, m in ours) == 1


def test_real_socket_pair_with_a_slow_writer():
    stream = b"".join(MESSAGES * 3)
    theirs_out, theirs_in = socket.socketpair()
    ours_out, ours_in = socket.socketpair()

    def write(sock):
        for at in range(0, len(stream), 4093):
            sock.sendall(stream[at : at + 4093])
        sock.close()

    writers = [threading.Thread(target=write, args=(s,)) for s in (theirs_out, ours_out)]
    for w in writers:
        w.start()
    try:
        theirs = decode_all(upstream.retrieve_msg, theirs_in, 3 * len(MESSAGES))
        ours = decode_all(worker_protocol.retrieve_msg, ours_in, 3 * len(MESSAGES))
        same(ours, theirs)
        with pytest.raises(SystemExit) as stopped:  # the frontend went away: exit 0, as upstream
            worker_protocol.retrieve_msg(ours_in)
        assert stopped.value.code == 0
    finally:
        for w in writers:
            w.join()
        theirs_in.close()
        ours_in.close()


def test_a_closed_connections_reader_goes_with_it():
    conn = PieceSocket(b"".join(MESSAGES), (1 << 30,))
    worker_protocol.retrieve_msg(conn)
    assert len(worker_protocol._readers) == 1
    del conn
    assert len(worker_protocol._readers) == 0


def test_each_socket_keeps_its_own_bytes():
    first, second = PieceSocket(b"".join(MESSAGES), (1 << 30,)), PieceSocket(b"".join(MESSAGES[::-1]), (1 << 30,))
    got_first, got_second = [], []
    for _ in MESSAGES:  # alternate: each one's buffered bytes stay with it
        got_first.append(worker_protocol.retrieve_msg(first))
        got_second.append(worker_protocol.retrieve_msg(second))
    same(got_first, decode_all(upstream.retrieve_msg, PieceSocket(b"".join(MESSAGES)), len(MESSAGES)))
    same(got_second, decode_all(upstream.retrieve_msg, PieceSocket(b"".join(MESSAGES[::-1])), len(MESSAGES)))


@pytest.mark.parametrize("cut", [0, 1, 3, 10, len(MESSAGES[1]) - 1])
def test_a_frontend_gone_mid_message_exits_0_as_upstream(cut, caplog):
    frame = MESSAGES[1][:cut]
    with pytest.raises(SystemExit) as theirs:
        upstream.retrieve_msg(PieceSocket(frame, (3,)))
    with caplog.at_level(logging.INFO), pytest.raises(SystemExit) as ours:
        worker_protocol.retrieve_msg(PieceSocket(frame, (3,)))
    assert ours.value.code == theirs.value.code == 0
    assert "Frontend disconnected." in caplog.messages


def test_an_unknown_command_raises_as_upstream():
    with pytest.raises(ValueError) as theirs:
        upstream.retrieve_msg(PieceSocket(b"X" + MESSAGES[1]))
    with pytest.raises(ValueError) as ours:
        worker_protocol.retrieve_msg(PieceSocket(b"X" + MESSAGES[1]))
    assert str(ours.value) == str(theirs.value)


def test_large_fields_bypass_the_buffer_and_small_ones_refill_it():
    conn = PieceSocket(b"a" * 10 + b"b" * 100 + b"c" * 7 + b"d" * 3, (6,))
    reader = SocketReader(conn, size=16)
    assert reader.take(10) == b"a" * 10
    large = reader.take(100)
    assert large == b"b" * 100 and type(large) is bytearray
    large += b"!"  # a plain bytearray of its own: no view holds it
    assert reader.take(7) == b"c" * 7 and reader.take(3) == b"d" * 3
    assert reader.take(0) == bytearray() and reader.take(-5) == bytearray()


# ---- install ---------------------------------------------------------------------------------
def worker_main(**changes):
    """A stand-in for the worker script's `__main__`: the real module's names, as a new module."""
    main = types.ModuleType("__main__")
    main.__dict__.update({k: v for k, v in vars(worker_module).items() if not k.startswith("__")})
    main.__file__ = worker_module.__file__
    main.async_comm = False
    main.__dict__.update(changes)
    return main


@pytest.fixture
def refusals(monkeypatch, caplog):
    monkeypatch.setattr(worker_protocol, "_refusal_logged", False)
    caplog.set_level(logging.DEBUG, logger=worker_protocol.__name__)
    return lambda: [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_the_digest_is_this_torchserves():
    assert worker_protocol.source_digest(upstream, worker_module.TorchModelServiceWorker) == worker_protocol.UPSTREAM_DIGEST


def test_installs_in_torchserve_0_12_0s_worker(refusals):
    main = worker_main()
    assert worker_protocol.install(main) is True
    assert main.retrieve_msg is worker_protocol.retrieve_msg
    assert worker_protocol.install(main) is True  # idempotent
    assert refusals() == []
    assert worker_module.retrieve_msg is upstream.retrieve_msg  # only the given module changes


def test_outside_a_worker_nothing_happens(refusals):
    assert worker_protocol.install() is False  # pytest's __main__
    assert worker_protocol.install(types.ModuleType("__main__")) is False
    assert refusals() == []


@pytest.mark.parametrize("case", ["version", "digest", "not upstream's", "async"])
def test_refuses_what_it_was_not_written_for_and_says_so_once(monkeypatch, refusals, case):
    main = worker_main()
    if case == "version":
        monkeypatch.setattr("ts.version.__version__", "0.12.1")
    elif case == "digest":
        monkeypatch.setattr(worker_protocol, "UPSTREAM_DIGEST", "0" * 64)
    elif case == "not upstream's":
        main.retrieve_msg = lambda conn: None
    else:
        main.async_comm = True
    before = main.retrieve_msg
    assert worker_protocol.install(main) is False
    assert worker_protocol.install(main) is False
    assert main.retrieve_msg is before
    assert len(refusals()) == 1 and "unbuffered" in refusals()[0]


def test_the_received_line_is_not_made_where_worker_logging_drops_it(monkeypatch):
    lines = []
    monkeypatch.setattr(logging, "info", lambda msg, *args: lines.append(msg))
    frame = MESSAGES[1]
    worker_protocol.retrieve_msg(PieceSocket(frame, (1 << 30,)))
    assert lines == ["Backend received inference at: %d"]  # no filter: upstream's line, as upstream
    monkeypatch.setattr(logging.root, "filters", [ReceivedLines()])
    worker_protocol.retrieve_msg(PieceSocket(frame, (1 << 30,)))
    assert lines == ["Backend received inference at: %d"]  # dropped anyway: not made
