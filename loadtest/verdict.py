"""`make loadtest`'s pass or fail, from Locust's final statistics (loadtest/locustfile.py calls it).

It fails when any request failed for another reason than a wrong top-1 label (a transport or
contract error), when nothing was answered, or when a model answered wrong clearly more often
than its held-out error rate says it should. No Locust import here: importing locust
gevent-patches the importing process, and pytest imports this module.
"""
from __future__ import annotations

import json
import math
from collections import Counter

WRONG_LABEL = "wrong top-1 label"


def images_in(name: str) -> int:
    """Images per request of a Locust entry: "lenet5 png" 1, "lenet5 json x8" 8."""
    last = name.split()[-1]
    return int(last[1:]) if last.startswith("x") and last[1:].isdigit() else 1


def heldout_error_rates() -> dict[str, float]:
    """{model: 1 - held-out accuracy} from each trained model's metrics.json."""
    from export.artifacts import ARTIFACTS
    rates = {}
    for path in ARTIFACTS.glob("*/metrics.json"):
        try:
            rates[path.parent.name] = 1.0 - float(json.loads(path.read_text())["heldout_accuracy"])
        except (OSError, ValueError, KeyError):
            continue
    return rates


def verdict(requests: dict[str, int], failures: list[tuple[str, str, int]],
            expected: dict[str, float]) -> tuple[bool, list[str]]:
    """(passed, lines to print) from {entry name: requests} and [(entry name, error, occurrences)]."""
    per_model: Counter = Counter()
    expected_wrong: Counter = Counter()
    for name, count in requests.items():
        model = name.split()[0]
        per_model[model] += count
        if model in expected:  # a request is wrong when any of its images is
            expected_wrong[model] += count * (1 - (1 - expected[model]) ** images_in(name))
    wrong: Counter = Counter()
    errors: Counter = Counter()
    for name, error, count in failures:
        if WRONG_LABEL in error:
            wrong[name.split()[0]] += count
        else:
            errors[error] += count
    total = sum(per_model.values())
    passed = total > 0 and not errors
    lines = [f"  {count:,} x {error}" for error, count in errors.most_common()]
    for model, n in sorted(per_model.items()):
        line = f"  {model:<12} {n:>7,} requests, wrong top-1 {wrong[model] / max(n, 1):6.2%}"
        if model in expected and n:
            p = expected_wrong[model] / n
            line += f" (held-out accuracy expects {p:.2%})"
            if wrong[model] / n > p + 4 * math.sqrt(max(p * (1 - p), 1e-4) / n) + 0.01:  # 4 standard errors + 1 point
                line, passed = line + "  <- worse than held-out accuracy allows", False
        lines.append(line)
    head = (f"load test {'passed' if passed else 'FAILED'}: {total:,} requests, "
            f"{sum(errors.values()):,} transport or contract errors, {sum(wrong.values()):,} wrong answers")
    return passed, [head, *lines]
