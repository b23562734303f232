"""Our batcher (serving/batcher.py, serving/java/) in a real TorchServe: the agent rewrites TorchServe's
Model.pollBatch as the frontend loads it, so a batch never waits for maxBatchDelay, and the jobs that
queue while the worker is busy go to it as one batch.

The server serves lenet5_slow (tests/support/slow_model.py: the real handler, plus a header that
makes the worker sleep once per batch) with one worker and a maxBatchDelay of DELAY_MS, which
TorchServe's own batcher would make every lone request wait. The agent itself, without a server:
tests/unit/test_batcher.py."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import pytest

from export.archive import ArchiveError
from reliability import probe
from serving import logs
from serving.logs import CONSOLE_LOG
from serving.server import LaunchError, running
from settings.ports import Ports
from tests.support.paths import MODEL_STORE
from tests.support.slow_handler import sleep_headers
from tests.support.slow_model import NAME as SLOW
from tests.support.slow_model import store_with_slow_model
from tests.support.ts_log import batches, pending_requests, wait_for_batches

pytestmark = pytest.mark.e2e
DELAY_MS = 5000   # lenet5_slow's maxBatchDelay here
# A lone request is answered in well under this; TorchServe's own batcher would hold it the whole
# DELAY_MS: half of it tells the two apart and leaves a busy machine's stalls seconds of room.
LONE_LIMIT_S = DELAY_MS / 1000 / 2
HOLD_S = 3.0      # the first request holds the model's only worker this long while QUEUED more arrive
SLEEP_S = 0.6     # each of those asks for this; the worker sleeps once per batch
QUEUED = 8        # requests sent while it does


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("batcher")
    with ExitStack() as stack:
        try:
            extra = store_with_slow_model(root / "store", MODEL_STORE, response_timeout_s=30,
                                          max_batch_delay_ms=DELAY_MS)
            srv = stack.enter_context(running(run_dir=root / "run", model_store=root / "store", ports=Ports.free(),
                                              timeout=180, extra=extra))
            probe.wait_ready(srv, SLOW)
        except (LaunchError, ArchiveError, TimeoutError) as err:
            pytest.fail(f"the batcher's server did not start: {err}")
        yield srv


def post(server, sleep_s: float = 0.0) -> probe.Answer:
    headers = sleep_headers(sleep_s) if sleep_s else {}
    return probe.post(f"{server.inference_url}/predictions/{SLOW}", probe.digit_png(), headers, timeout=60)


def test_the_frontend_says_the_batcher_is_installed(server):
    """On its console, and in the verdict the launcher and the container's readiness check read."""
    console = (server.log_dir / CONSOLE_LOG).read_text(errors="replace")
    assert "tinyserve batcher: installed" in console, console[-2000:]
    assert server.batcher().ours, server.batcher()


def test_a_lone_request_does_not_wait_for_a_batch_to_fill(server):
    answers = [post(server) for _ in range(5)]
    assert [a.status for a in answers] == [200] * 5, [a.body[:200] for a in answers]
    assert len(answers[-1].json()["probabilities"]) == 10
    slowest = max(a.seconds for a in answers)
    print(f"\nlone requests: {[round(a.seconds, 3) for a in answers]} s (maxBatchDelay {DELAY_MS} ms)")
    assert slowest < LONE_LIMIT_S, f"a lone request took {slowest:.2f} s (maxBatchDelay {DELAY_MS} ms)"


def test_requests_queued_behind_a_busy_worker_go_as_one_batch(server):
    """The first request holds the only worker for HOLD_S; the QUEUED sent meanwhile each ask for SLEEP_S,
    and the worker sleeps once per batch. Once TorchServe's queue holds all QUEUED (describe-model's
    pendingRequests), they must go to the worker as one batch: TorchServe's log counts two batches in
    all, and the last answer comes ~SLEEP_S after the first's, where one batch each would take
    QUEUED x SLEEP_S."""
    since = logs.offsets(server.log_dir)
    with ThreadPoolExecutor(1 + QUEUED) as pool:
        first = pool.submit(post, server, HOLD_S)
        wait_for_batches(server, SLOW, since, 1)  # the worker has the first: nothing else is in its batch
        queued = [pool.submit(post, server, SLEEP_S) for _ in range(QUEUED)]
        waiting, started = 0, time.monotonic()
        while waiting < QUEUED and not first.done() and time.monotonic() - started < 30:
            waiting = pending_requests(server, SLOW)
            time.sleep(0.02)
        all_queued_s = time.monotonic() - started
        answers = [first.result(), *(f.result() for f in queued)]
    assert waiting == QUEUED, f"only {waiting} of {QUEUED} were queued while the first held the worker"
    assert [a.status for a in answers] == [200] * (1 + QUEUED), [a.body[:200] for a in answers]
    sent = batches(server, SLOW, since)
    after_first = max(a.done_at for a in answers[1:]) - answers[0].done_at
    print(f"\n{QUEUED} queued {all_queued_s:.2f} s after the first was taken; {sent} batches in all; the last "
          f"answered {after_first:.2f} s after the first (one at a time: {QUEUED * SLEEP_S:.1f} s)")
    assert sent == 2, f"{sent} batches for the first and the {QUEUED} queued behind it: not one batch"
    # one batch: SLEEP_S plus milliseconds of inference; one batch each: QUEUED x SLEEP_S (4.8 s).
    # Half of the latter leaves a busy machine 1.8 s of room and still fails at QUEUED / 2 batches.
    assert after_first < QUEUED * SLEEP_S / 2, (
        f"the queued were answered {after_first:.2f} s after the first: they did not go as one batch")
