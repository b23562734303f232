"""The reverse proxy's runtime settings: timeouts, connection caps and the drain of nginx in front of
TorchServe (serving/proxy.py renders them into serving/nginx.conf.template; RELIABILITY.md has the
attacks they answer and what was measured)."""
from __future__ import annotations

from dataclasses import dataclass

from settings.model_serving import SERVING


@dataclass(frozen=True)
class ProxyLimits:
    # slowloris and half-sent bodies are closed (408) after this long without headers done or a body read
    read_timeout_s: int = 10
    # an idle keep-alive connection is closed after this, so idle sockets cost nothing for long
    keepalive_timeout_s: int = 15
    # per nginx worker, idle ones included: thousands of idle clients fit, where TorchServe alone ran out of fds
    worker_connections: int = 16384
    # above what the models' job queues hold (JOB_QUEUE_SIZE each, settings/ports.py): more would only wait longer
    max_requests_in_flight: int = 1024
    # keep-alive connections kept open to TorchServe: no TCP handshake per request under load
    upstream_keepalive: int = 64
    # past TorchServe's own response timeout, which restarts a stuck worker first
    upstream_timeout_s: int = max(s.response_timeout_s for s in SERVING.values()) + 5
    # bodies above this go to a temp file in the run dir: half-sent large bodies cost disk, not RAM
    body_buffer_bytes: int = 64 * 1024
    # on SIGTERM, requests in flight get this long to finish before nginx closes them
    drain_timeout_s: int = 25
    # a request line or header line longer than this is refused by nginx (414/400): Netty behind it
    # refuses a request line over 4,096 bytes and headers over 8,192 in its own, non-JSON words
    header_line_bytes: int = 4096
    # the access log keeps this much of a request line: one request writes one bounded line
    logged_request_chars: int = 512
    # the local proxy's access and error logs: each rotated at this size, this many files kept
    # (rotatelogs -n); in the pod they go to stdout/stderr, which the kubelet rotates
    log_file_bytes: int = 20 * 1024 * 1024
    log_files_kept: int = 3



@dataclass(frozen=True)
class TLSPolicy:
    """What the proxy's TLS accepts (serving/tls.py has the certificate files)."""
    protocols: str = "TLSv1.2 TLSv1.3"
    # TLS 1.2: the suites of Mozilla's "intermediate" profile (forward secrecy, AEAD ciphers only);
    # TLS 1.3 suites are all strong and are OpenSSL's own
    ciphers: str = ("ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
                    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")
    # a resumed session skips the handshake's key exchange; tickets off: their keys would never rotate
    session_cache: str = "shared:tls:10m"
    session_timeout: str = "1h"



@dataclass(frozen=True)
class KeyDefaults:
    """API keys at the proxy (serving/api_keys.py): what a key gets unless its entry says otherwise."""
    # requests per second per key, and how many above that rate pass at once: a client alone gets about
    # a twentieth of one pod's 2-core throughput (docs/BENCHMARKS.md), so 64 clients hammering with one
    # key are held to it and see 429s while the others' requests keep their latency
    rate_per_s: int = 100
    burst: int = 100
    limited_status: int = 429
    zone_size: str = "1m"  # per rate class: about 16,000 keys' counters
    # the njs module that hashes the bearer token (Debian: libnginx-mod-http-js)
    njs_module: str = "/usr/lib/nginx/modules/ngx_http_js_module.so"


PROXY = ProxyLimits()
TLS = TLSPolicy()
KEYS = KeyDefaults()
