"""TEST ONLY: the real classifier handler with a knob that makes a request slow.

A request whose Content-Type carries the parameter `x-test-sleep-s=<seconds>` (image/png;
x-test-sleep-s=2: the proxy passes no other client header on, and the handler reads only the media
type) makes the worker sleep that long before it answers the batch, as a stuck or very slow
inference would. Every other request is handled by the production handler unchanged. Packed by tests/support/slow_model.py into an archive under build/,
never into model_store/.
"""
from __future__ import annotations

import re
import time

from handlers.classifier_handler import ImageClassifierHandler
from handlers.request_decoding import request_header

SLEEP_PARAMETER = "x-test-sleep-s"
MAX_SLEEP_S = 60.0
SLEEP_IN_CONTENT_TYPE = re.compile(rf";\s*{SLEEP_PARAMETER}=([0-9.]+)", re.IGNORECASE)


def sleep_headers(seconds: float) -> dict[str, str]:
    """The headers of a PNG request that asks the slow handler to sleep `seconds`."""
    return {"Content-Type": f"image/png; {SLEEP_PARAMETER}={seconds:g}"}


def requested_sleep(context, idx: int) -> float:
    """Seconds request `idx` asks the worker to sleep (0 without the parameter), at most MAX_SLEEP_S."""
    match = SLEEP_IN_CONTENT_TYPE.search(request_header(context, idx, "Content-Type") or "")
    try:
        return min(max(float(match[1]), 0.0), MAX_SLEEP_S) if match else 0.0
    except ValueError:  # not a number (1.2.3)
        return 0.0


class SlowClassifierHandler(ImageClassifierHandler):
    def handle(self, data, context):
        delay = max((requested_sleep(context, idx) for idx in range(len(data))), default=0.0)
        if delay:
            time.sleep(delay)
        return super().handle(data, context)
