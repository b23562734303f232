"""The benchmark's round loop (loadtest/bench/rounds.py) with stand-in targets: how long each is
warmed, the rotation of the targets' order, every (target, C) cell filled."""
from __future__ import annotations

import numpy as np

from loadtest import client
from loadtest.bench.rounds import Entry, Schedule, run_rounds


class Recorder:
    def __init__(self, name: str, calls: list):
        self.name, self.calls = name, calls

    def warm(self, duration_s: float) -> None:
        self.calls.append(("warm", self.name, duration_s))

    def run(self, concurrency: int, duration_s: float, warmup_s: float):
        self.calls.append(("run", self.name, concurrency))
        n = 10
        return client.Result(concurrency, duration_s, np.full(n, 0.001), np.linspace(0, duration_s, n),
                             np.ones(n, int)), None


def entries(calls: list) -> list[Entry]:
    return [Entry(name, name, "req/s", Recorder(name, calls)) for name in ("a", "b", "c")]


def test_each_target_is_warmed_for_the_server_warmup_before_any_round():
    calls: list = []
    cells = run_rounds(entries(calls), Schedule((1, 16), 2, 0.1, 1.0, server_warmup_s=10.0), log=lambda _: None)
    assert calls[:3] == [("warm", "a", 10.0), ("warm", "b", 10.0), ("warm", "c", 10.0)]
    assert all(kind == "run" for kind, *_ in calls[3:])
    assert set(cells) == {(n, c) for n in "abc" for c in (1, 16)}


def test_the_warmup_is_at_least_twice_a_cells_and_the_order_rotates_each_round():
    calls: list = []
    run_rounds(entries(calls), Schedule((1,), 3, 0.1, 1.5), log=lambda _: None)
    assert [d for kind, _, d in calls if kind == "warm"] == [3.0, 3.0, 3.0]
    runs = [name for kind, name, _ in calls if kind == "run"]
    assert runs == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
