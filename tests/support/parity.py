"""Float32 parity between two runs of a model on the same canonical inputs (another batch size, the
optimised copy, another transport): the same top-1, and probabilities equal up to float32 noise.

The bound is relative, since softmax turns a logit's rounding error into a relative error of the
probability: the logs of the probabilities agree within LOG_TOLERANCE wherever both are normal float32
numbers. The worst measured across batch sizes 1-64 over 512 held-out pictures per model was 3.8e-5
(lenet5 on an AMD EPYC, where the absolute difference reached 1.8e-6); LOG_TOLERANCE leaves 5x that.
"""
from __future__ import annotations

import numpy as np

LOG_TOLERANCE = 2e-4
# below this a float32 is subnormal or near it and keeps few significant bits
NORMAL = 1e-30


def assert_same_probabilities(got, want, log_tolerance: float = LOG_TOLERANCE) -> None:
    """Same argmax per row, and |log got - log want| <= log_tolerance where both are normal numbers
    (a smaller one may differ only by being smaller than NORMAL too)."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert (got.argmax(axis=-1) == want.argmax(axis=-1)).all(), "the top-1 class differs"
    normal = (got >= NORMAL) & (want >= NORMAL)
    assert ((got < NORMAL * 1e3) == (want < NORMAL * 1e3))[~normal].all(), "a probability is tiny in one run only"
    worst = float(np.abs(np.log(got[normal]) - np.log(want[normal])).max(initial=0.0))
    assert worst <= log_tolerance, f"probabilities differ by a factor of 1 + {worst:.2e} (bound {log_tolerance:.0e})"
