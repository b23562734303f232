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
from serving.logs import CONSOLE_LOG
from serving.server import LaunchError, running
from settings.ports import Ports
from tests.support.paths import MODEL_STORE
from tests.support.slow_handler import SLEEP_HEADER
from tests.support.slow_model import NAME as SLOW
from tests.support.slow_model import store_with_slow_model

pytestmark = pytest.mark.e2e
DELAY_MS = 5000   # lenet5_slow's maxBatchDelay here
SLEEP_S = 0.6     # a batch that asks for it holds the model's only worker this long
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
    headers = {SLEEP_HEADER: str(sleep_s)} if sleep_s else {}
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
    assert slowest < DELAY_MS / 1000 / 5, f"a lone request took {slowest:.2f} s (maxBatchDelay {DELAY_MS} ms)"


def test_requests_queued_behind_a_busy_worker_go_as_one_batch(server):
    """The first request holds the only worker for SLEEP_S; the QUEUED that arrive meanwhile each ask for
    SLEEP_S too, and the worker sleeps once per batch: one batch behind the first finishes ~2 x SLEEP_S
    after it started, one batch each would take (1 + QUEUED) x SLEEP_S."""
    with ThreadPoolExecutor(1 + QUEUED) as pool:
        first = pool.submit(post, server, SLEEP_S)
        time.sleep(SLEEP_S / 3)
        queued = [pool.submit(post, server, SLEEP_S) for _ in range(QUEUED)]
        answers = [first.result(), *(f.result() for f in queued)]
    assert [a.status for a in answers] == [200] * (1 + QUEUED), [a.body[:200] for a in answers]
    took = max(a.done_at for a in answers) - answers[0].sent_at
    assert took < 3.5 * SLEEP_S, f"{1 + QUEUED} requests took {took:.2f} s: the queued ones did not go as one batch"
