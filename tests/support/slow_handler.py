"""TEST ONLY: the real classifier handler with a knob that makes a request slow.

A request with the header `X-Test-Sleep-S: <seconds>` makes the worker sleep that long before it
answers the batch, as a stuck or very slow inference would. Every other request is handled by the
production handler unchanged. Packed by tests/support/slow_model.py into an archive under build/,
never into model_store/.
"""
from __future__ import annotations

import time

from handlers.classifier_handler import ImageClassifierHandler
from handlers.request_decoding import request_header

SLEEP_HEADER = "X-Test-Sleep-S"
MAX_SLEEP_S = 60.0


def requested_sleep(context, idx: int) -> float:
    """Seconds request `idx` asks the worker to sleep (0 without the header), at most MAX_SLEEP_S."""
    try:
        return min(max(float(request_header(context, idx, SLEEP_HEADER)), 0.0), MAX_SLEEP_S)
    except (TypeError, ValueError):  # no header (None), or not a number
        return 0.0


class SlowClassifierHandler(ImageClassifierHandler):
    def handle(self, data, context):
        delay = max((requested_sleep(context, idx) for idx in range(len(data))), default=0.0)
        if delay:
            time.sleep(delay)
        return super().handle(data, context)
