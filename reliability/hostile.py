"""Hostile requests, built in memory: what an attacker would send a public image endpoint.

Each entry: a name, the request (body and headers) and what a hardened server answers. The
security tests send each to a real server while sampling the frontend's and the worker's resident
memory, and check the answer, its time, the memory it cost and that the server still serves.
"""
from __future__ import annotations

import base64
import json
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from handlers.png import png_bytes
from settings.limits import LIMITS

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Hostile:
    name: str
    body: bytes
    headers: dict = field(default_factory=dict)
    status: int = 413                # what the server must answer
    error: str | None = None         # our handler's error code, None for TorchServe's own answers
    max_seconds: float = 2.0         # refused fast
    max_worker_mb: float = 64.0      # peak resident growth of the model's worker
    max_frontend_mb: float = 160.0   # peak resident growth of the Java frontend


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int, mode_color_type: int = 0) -> bytes:
    """A complete, valid PNG of width x height black pixels: huge when decoded, tiny on the wire."""
    channels = {0: 1, 2: 3, 6: 4}[mode_color_type]
    row = b"\0" * (width * channels + 1)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, mode_color_type, 0, 0, 0)
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height and carries almost no data (a lie about its size)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")


def gif_header_only(width: int, height: int) -> bytes:
    """GIF89a with a width x height logical screen and image descriptor, one tiny LZW block."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    image = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return screen + image + b";"


def jpeg_header_only(width: int, height: int) -> bytes:
    """A baseline JPEG whose SOF0 declares width x height (65,535 at most), no scan data."""
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    quant = b"\xff\xdb" + struct.pack(">HB", 67, 0) + bytes([1] * 64)
    return b"\xff\xd8" + quant + sof + b"\xff\xd9"


def bmp_header_only(width: int, height: int) -> bytes:
    """A BMP whose info header declares width x height at 24 bits, with 16 bytes of pixels."""
    pixels = b"\0" * 16
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    header = b"BM" + struct.pack("<IHHI", 14 + len(info) + len(pixels), 0, 0, 14 + len(info))
    return header + info + pixels


def nested_json(depth: int) -> bytes:
    return b'{"image": ' + b"[" * depth + b"]" * depth + b"}"


def nested_objects(depth: int) -> bytes:
    return b'{"a": ' * depth + b"1" + b"}" * depth


def small_objects(count: int = 1_000_000) -> bytes:
    """[{"a":1}, ...]: an 8 MB body of small objects, which json.loads takes ~0.5 s to build."""
    return b"[" + b",".join([b'{"a":1}'] * count) + b"]"


def largest_pixel_json(budget: int = LIMITS.max_request_bytes) -> bytes:
    """{"pixels": [[255, ...], ...]}: the most numbers a body within the size limit can carry."""
    side = int((budget / 4.1) ** 0.5)
    return json.dumps({"pixels": [[255] * side] * side}, separators=(",", ":")).encode()


def many_instances(count: int = 80_000) -> bytes:
    b64 = base64.b64encode(png_bytes(np.zeros((1, 1), dtype=np.uint8))).decode()
    return json.dumps({"instances": [b64] * count}).encode()


def many_form_fields(count: int = 50_000) -> tuple[bytes, str]:
    boundary = "hostileboundary"
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nx\r\n" for i in range(count)]
    return ("".join(parts) + f"--{boundary}--\r\n").encode(), f"multipart/form-data; boundary={boundary}"


def catalogue() -> list[Hostile]:
    """Every hostile request, with the answer and bounds a hardened server meets."""
    png = {"Content-Type": "image/png"}
    json_type = {"Content-Type": "application/json"}
    form, form_type = many_form_fields()
    side = LIMITS.max_image_side
    return [
        Hostile("PNG bomb: 12,000 x 12,000 black (144 Mpx, 0.1 MB)", png_bomb(12_000, 12_000), png,
                413, "image_too_large"),
        Hostile("PNG bomb: 8,192 x 8,192 RGBA (268 MB decoded)", png_bomb(side, side, 6), png, 413, "image_too_large"),
        Hostile("PNG header: 2^31-1 x 2^31-1", png_header_only(2**31 - 1, 2**31 - 1), png, 413, "image_too_large"),
        Hostile("GIF header: 65,535 x 65,535", gif_header_only(65_535, 65_535), {"Content-Type": "image/gif"},
                413, "image_too_large"),
        Hostile("JPEG header: 65,500 x 65,500", jpeg_header_only(65_500, 65_500), {"Content-Type": "image/jpeg"},
                413, "image_too_large"),
        Hostile("BMP header: 100,000 x 100,000", bmp_header_only(100_000, 100_000), {"Content-Type": "image/bmp"},
                413, "image_too_large"),
        # within every limit, so these are served: the bound is what the limits let a request cost
        Hostile("largest legal image: 4,000 x 4,000 RGBA PNG, zeros (64 MB decoded)", png_bomb(4_000, 4_000, 6), png,
                200, None, max_seconds=6.0, max_worker_mb=600.0),
        Hostile("largest legal request: 40 Mpx in 3 RGBA PNGs of zeros (0.2 MB)", largest_legal_request(), json_type,
                200, None, max_seconds=10.0, max_worker_mb=800.0),
        # more lists or objects than 64 images need: counted in the raw body, never parsed
        Hostile("nested JSON arrays, depth 1,000,000 (2 MB)", nested_json(1_000_000), json_type,
                400, "json_too_complex"),
        Hostile("nested JSON objects, depth 100,000", nested_objects(100_000), json_type, 400, "json_too_complex"),
        Hostile("1,000,000 small JSON objects (8 MB)", small_objects(), json_type, 400, "json_too_complex"),
        Hostile("pixel JSON filling the 8 MiB body limit", largest_pixel_json(), json_type,
                200, None, max_seconds=6.0, max_worker_mb=300.0),
        Hostile("80,000 base64 instances (7.7 MB JSON)", many_instances(), json_type, 413, "too_many_images",
                max_worker_mb=200.0),
        # TorchServe's frontend decodes every field before our handler sees the first
        Hostile("multipart form with 50,000 fields (3.5 MB)", form, {"Content-Type": form_type}, 415, "not_an_image",
                max_seconds=8.0, max_worker_mb=200.0, max_frontend_mb=250.0),
    ]


def largest_legal_request() -> bytes:
    """{"instances": [...]} at the per-request pixel limit: 4,000 x 4,000 twice and 4,000 x 2,000,
    RGBA PNGs of zeros (40 Mpx, 0.2 MB on the wire): the most decoding work one request may ask."""
    def b64(width, height):
        return base64.b64encode(png_bomb(width, height, 6)).decode()
    return json.dumps({"instances": [b64(4_000, 4_000), b64(4_000, 4_000), b64(4_000, 2_000)]}).encode()


def main(argv=None) -> int:
    """Send the catalogue (or a batch of the largest legal request) to a running server and print
    what came back: python -m reliability.hostile --url http://127.0.0.1:8080/predictions/lenet5"""
    import argparse
    import sys
    import time
    from concurrent.futures import ThreadPoolExecutor

    import requests

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--url", required=True, help="a prediction URL on 127.0.0.1")
    parser.add_argument("--worst-batch", type=int, default=0, metavar="N",
                        help="instead: N concurrent largest legal requests, and one small request among them")
    parser.add_argument("--key", help="inference key when token auth is on")
    args = parser.parse_args(argv)
    if not args.url.startswith(("http://127.", "http://localhost")):
        print("error: --url must be a loopback address (http://127.0.0.1:PORT/predictions/MODEL)", file=sys.stderr)
        return 2
    auth = {"Authorization": f"Bearer {args.key}"} if args.key else {}

    def send(body, headers):
        started = time.monotonic()
        try:
            response = requests.post(args.url, data=body, headers={**headers, **auth}, timeout=120)
            return response.status_code, response.content[:100], time.monotonic() - started
        except requests.RequestException as err:
            return None, str(err)[:100].encode(), time.monotonic() - started

    if args.worst_batch:
        body, headers = largest_legal_request(), {"Content-Type": "application/json"}
        small = png_bomb(28, 28)
        with ThreadPoolExecutor(args.worst_batch + 1) as pool:
            big = [pool.submit(send, body, headers) for _ in range(args.worst_batch)]
            time.sleep(0.3)
            victim = pool.submit(send, small, {"Content-Type": "image/png"}).result()
            results = [f.result() for f in big]
        print(f"{args.worst_batch} largest legal requests ({args.worst_batch * len(body) / 1e6:.1f} MB in all): "
              f"statuses {sorted({r[0] for r in results}, key=str)}, "
              f"slowest {max(r[2] for r in results):.1f} s; a 28x28 request sent meanwhile: {victim[0]} "
              f"after {victim[2]:.1f} s")
        return 0
    for case in catalogue():
        status, head, seconds = send(case.body, case.headers)
        print(f"{case.name}: {status} in {seconds:.3f} s (expected {case.status}) {head!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
