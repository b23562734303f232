"""TorchServe's worker reads each batch from the frontend's socket through one buffer.

TorchServe 0.12.0's worker decodes a message field by field (ts/protocol/otf_message_handler.py)
and calls `conn.recv(length)` for every field: about 35 recv calls per request, each a syscall and
a few Python frames (py-spy, lenet5 at 16 in flight: `_retrieve_buffer` ~40 us per request of
self time, of a worker's ~430). `retrieve_msg` here decodes the same frames into the same objects
(bytearray, str, dict and list, exactly where upstream has them; JSON and text inputs decoded
under the same rules, with the same warnings; "Frontend disconnected." and exit 0 at the end of
the stream), but reads the socket with `recv_into` into one buffer per connection, so a batch
costs one or two syscalls. Bytes read past the current message stay in that buffer for the next.
Upstream's per-batch line "Backend received inference at" is made as upstream makes it, unless
handlers/worker_logging.py's filter would drop it anyway (then not at all: ~4 us per batch).
Measured, lenet5, `python -m loadtest.bench --tune handler` (3 rounds of 4 s), 5 runs each,
interleaved with the same archives without this, 2-CPU Xeon: the worker's CPU per request
1,090 -> 1,046 us at 1 client, 620 -> 597 at 16, 460 -> 443 at 64 (medians; runs within ~10 us of
each other); 3,052 -> 3,146 req/s at 16, 4,494 -> 4,632 at 64.

`install()` (called by the handler as the model loads, inside the worker) puts it in the worker
loop's globals: the loop (`TorchModelServiceWorker.handle_connection`, run as the script
`__main__`) looks `retrieve_msg` up at each call. Until then the load message was read by
upstream's own code, which reads exactly one message, so nothing is buffered yet. It patches only
what it was written for: TorchServe 0.12.0 whose decoder and worker loop have the source digest
below. Otherwise it leaves TorchServe alone and says so once in the worker log. From then on the
loop's reads of the socket all go through `retrieve_msg`; the worker only writes to it otherwise
(the answers, with `sendall`).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import struct
import sys
import time
import weakref

from handlers.worker_logging import ReceivedLines

logger = logging.getLogger(__name__)

TS_VERSION = "0.12.0"
# sha256 of upstream's decoding functions and the worker loop that calls them (source_digest()):
# a TorchServe whose reading differs in any way gets no patch.
UPSTREAM_DIGEST = "7348c9022eb882364a049d5fce8e7d0429473110cdf378f1208d7962323c2999"
DECODER_FUNCTIONS = ("retrieve_msg", "_retrieve_buffer", "_retrieve_int", "_retrieve_bool",
                     "_retrieve_load_msg", "_retrieve_inference_msg", "_retrieve_request",
                     "_retrieve_reqest_header", "_retrieve_input_data")
WORKER_FILE = os.path.join("ts", "model_service_worker.py")

LOAD_MSG = b"L"
PREDICT_MSG = b"I"
BUFFER_SIZE = 64 * 1024  # one batch of small pictures in one recv; larger fields are read apart
_INT = struct.Struct("!i")
_BOOL = struct.Struct("!?")

_readers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_last: SocketReader | None = None
_refusal_logged = False


class SocketReader:
    """One frontend connection's bytes, received in as few `recv_into` calls as it allows."""

    __slots__ = ("sock", "buf", "view", "pos", "end", "__weakref__")

    def __init__(self, sock, size: int = BUFFER_SIZE):
        self.sock = weakref.ref(sock)  # the caller holds the socket; _readers is keyed by it
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.pos = 0  # next unread byte
        self.end = 0  # end of the received bytes

    def _receive(self, view) -> int:
        got = self.sock().recv_into(view)
        if not got:
            logging.info("Frontend disconnected.")  # upstream's words, on the root logger
            sys.exit(0)
        return got

    def _fill(self, n: int) -> None:
        """At least n (<= the buffer's size) unread bytes in the buffer."""
        if self.pos == self.end:
            self.pos = self.end = 0
        elif self.pos + n > len(self.buf):  # no room after them: move the unread bytes to the front
            unread = self.end - self.pos
            self.view[:unread] = self.view[self.pos : self.end]
            self.pos, self.end = 0, unread
        while self.end - self.pos < n:
            self.end += self._receive(self.view[self.end :])

    def take(self, n: int) -> bytearray:
        """The next n bytes (none for n <= 0, as upstream)."""
        pos = self.pos
        if 0 <= n <= self.end - pos:
            self.pos = pos + n
            return self.buf[pos : pos + n]
        if n <= 0:
            return bytearray()
        if n <= len(self.buf) // 2:
            self._fill(n)
            return self.take(n)
        # a large field: what is buffered, then the rest straight into its own bytearray
        out = bytearray(n)
        have = self.end - pos
        out[:have] = self.view[pos : self.end]
        self.pos = self.end = 0
        with memoryview(out) as view:
            while have < n:
                have += self._receive(view[have:])
        return out

    def int(self) -> int:
        pos = self.pos
        if self.end - pos < 4:
            self._fill(4)
            pos = self.pos
        self.pos = pos + 4
        return _INT.unpack_from(self.buf, pos)[0]

    # ---- the frames, as ts/protocol/otf_message_handler.py decodes them ----------------------
    def read_msg(self):
        cmd = self.take(1)
        if cmd == LOAD_MSG:
            msg = self.load_msg()
        elif cmd == PREDICT_MSG:
            msg = self.inference_msg()
            if not _received_line_dropped():
                logging.info("Backend received inference at: %d", time.time())
        else:
            raise ValueError("Invalid command: {}".format(cmd))
        return cmd, msg

    def load_msg(self) -> dict:
        take, read_int = self.take, self.int
        msg = {}
        msg["modelName"] = take(read_int())
        msg["modelPath"] = take(read_int())
        msg["batchSize"] = read_int()
        msg["handler"] = take(read_int())
        gpu_id = read_int()
        if gpu_id >= 0:
            msg["gpu"] = gpu_id
        msg["envelope"] = take(read_int())
        msg["limitMaxImagePixels"] = _BOOL.unpack(take(1))[0]
        return msg

    def inference_msg(self) -> list:
        take, read_int = self.take, self.int
        decode = os.environ.get("TS_DECODE_INPUT_REQUEST") in (None, "true")
        msg = []
        while True:
            length = read_int()
            if length == -1:
                return msg
            request = {"requestId": take(length)}
            headers = []
            while True:
                length = read_int()
                if length == -1:
                    break
                name = take(length)
                headers.append({"name": name, "value": take(read_int())})
            request["headers"] = headers
            inputs = []
            while True:
                length = read_int()
                if length == -1:
                    break
                name = take(length).decode("utf-8")
                content_type = take(read_int()).decode("utf-8")
                inputs.append(_input(name, content_type, take(read_int()), decode))
            request["parameters"] = inputs
            msg.append(request)


def _received_line_dropped() -> bool:
    """Whether the root logger drops upstream's per-batch "Backend received inference at" line
    (handlers/worker_logging.py): then it is not made at all, ~4 us of a worker per batch."""
    return any(isinstance(f, ReceivedLines) for f in logging.root.filters)


def _input(name: str, content_type: str, value: bytearray, decode: bool) -> dict:
    """One model input, its value decoded as upstream's `_retrieve_input_data` decodes it."""
    model_input = {"name": name, "contentType": content_type}
    if content_type == "application/json" and decode:
        try:
            model_input["value"] = json.loads(value.decode("utf-8"))
        except Exception:
            model_input["value"] = value
            logging.warning("Failed json decoding of input data. Forwarding encoded payload", exc_info=True)
    elif content_type.startswith("text") and decode:
        try:
            model_input["value"] = value.decode("utf-8")
        except Exception:
            model_input["value"] = value
            logging.warning("Failed utf-8 decoding of input data. Forwarding encoded payload", exc_info=True)
    else:
        model_input["value"] = value
    return model_input


def retrieve_msg(conn):
    """Upstream's `retrieve_msg(conn)`, read through the connection's buffer."""
    global _last
    reader = _last
    if reader is None or reader.sock() is not conn:
        reader = _readers.get(conn)
        if reader is None:
            reader = _readers[conn] = SocketReader(conn)
        _last = reader
    return reader.read_msg()


# ---- install --------------------------------------------------------------------------------
def source_digest(decoder, worker_class) -> str:
    """sha256 of the decoder functions' and the worker loop's source."""
    digest = hashlib.sha256()
    for source in [getattr(decoder, name) for name in DECODER_FUNCTIONS] + [worker_class.handle_connection]:
        digest.update(inspect.getsource(source).encode("utf-8"))
    return digest.hexdigest()


def _refuse(reason: str) -> bool:
    global _refusal_logged
    if not _refusal_logged:
        _refusal_logged = True
        logger.warning("TorchServe's worker reads its socket unbuffered, as upstream does: %s", reason)
    return False


def install(main=None) -> bool:
    """Put the buffered `retrieve_msg` in TorchServe's worker loop; True if it is there now.

    `main` is the worker script's module (`sys.modules["__main__"]` in a worker). Outside a
    worker (a unit test, a notebook) nothing happens; inside one that is not TorchServe 0.12.0's
    reading code as digested here, nothing happens and the worker log says so once."""
    main = sys.modules.get("__main__") if main is None else main
    if getattr(main, "retrieve_msg", None) is retrieve_msg:
        return True
    try:
        import ts.version
        from ts.protocol import otf_message_handler as decoder
    except ImportError:
        return False
    worker_class = getattr(main, "TorchModelServiceWorker", None)
    if worker_class is None or not str(getattr(main, "__file__", "")).endswith(WORKER_FILE):
        logger.debug("not in TorchServe's worker script: its socket reads are left alone")
        return False
    if ts.version.__version__ != TS_VERSION:
        return _refuse(f"written for TorchServe {TS_VERSION}, this is {ts.version.__version__}")
    if getattr(main, "retrieve_msg", None) is not decoder.retrieve_msg:
        return _refuse("the worker loop's retrieve_msg is not TorchServe's own")
    if getattr(main, "async_comm", False):
        return _refuse("the worker runs asynchronously (AsyncService reads the socket itself)")
    try:
        digest = source_digest(decoder, worker_class)
    except (OSError, TypeError) as err:
        return _refuse(f"its source cannot be read ({err})")
    if digest != UPSTREAM_DIGEST:
        return _refuse(f"its decoder or worker loop differs from the one this was written for (sha256 {digest})")
    main.retrieve_msg = retrieve_msg
    logger.info("TorchServe's worker reads its socket through one buffer (handlers/worker_protocol.py)")
    return True
