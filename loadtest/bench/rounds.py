"""The one round loop of the benchmark and the tuning sweep: warm every target once, then in each
round run every target at every concurrency once, the targets' order rotated by one each round, so
that other load on a shared machine hits them alike; each (target, C) pools its rounds in a Cell."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from loadtest.bench.measure import Cell, Target


@dataclass(frozen=True)
class Entry:
    """One thing measured in the rounds: a row of the benchmark or a tuning variant."""
    key: str       # its cells' key
    label: str     # as the progress lines show it
    unit: str      # "images/s" or "req/s": the throughput the progress lines show
    target: Target


@dataclass(frozen=True)
class Schedule:
    """How long and how often: seconds measured per cell after warmup_s, rounds, concurrencies."""
    concurrency: tuple[int, ...]
    rounds: int
    duration_s: float
    warmup_s: float
    # each target under load this long first (at least 2 x warmup_s): a fresh frontend's JIT would skew the first cells
    server_warmup_s: float = 0.0


def run_rounds(entries: Sequence[Entry], schedule: Schedule,
               log: Callable[[str], None] = print) -> dict[tuple[str, int], Cell]:
    """{(entry key, C): its rounds pooled}; targets are warmed first (Schedule.server_warmup_s, at
    least 2 x warmup_s each)."""
    for entry in entries:
        entry.target.warm(max(schedule.warmup_s * 2, schedule.server_warmup_s))
    cells = {(e.key, c): Cell() for e in entries for c in schedule.concurrency}
    entries = list(entries)
    for round_index in range(schedule.rounds):
        shift = round_index % len(entries)
        order = entries[shift:] + entries[:shift]
        for c in schedule.concurrency:
            for entry in order:
                result, cpu = entry.target.run(c, schedule.duration_s, schedule.warmup_s)
                cells[(entry.key, c)].add(result, cpu)
                throughput = result.images_per_s if entry.unit == "images/s" else result.rps
                log(f"  round {round_index + 1}/{schedule.rounds}  C={c:<3} {entry.label} "
                    f"{throughput:9.1f} {entry.unit:<8} p99 {result.percentile_ms(99):7.1f} ms  "
                    f"errors {sum(result.errors.values())}")
    return cells
