"""Locust scenario: clients posting real held-out images to the three models, every answer checked.

    make loadtest [USERS=16] [SPAWN_RATE=4] [DURATION=30s] [HOST=http://127.0.0.1:8080]
    locust -f loadtest/locustfile.py --host http://127.0.0.1:8080       # with Locust's web UI

The mix (weights, from what a digit-recognition front end with a fashion catalogue would see):
- models: lenet5 50%, mnist_net 30%, fashion_mlp 20%;
- transports: the PNG as the raw body (curl -T, most API clients) 80%, a multipart form upload
  (browsers) 15%, a JSON batch of 8 base64 PNGs ({"instances": [...]}) 5%.
Images are the models' real held-out images as PNG (export/heldout.py), picked at random.

Every answer is checked: status 200, the answer contract (handlers/contract.py: {"model", "label",
"index", "probabilities"}, probabilities summing to 1), and top-1 against the image's true label.
A wrong answer is a failure ("wrong top-1 label"), so the failure rate includes the models' own
held-out error (about 1% for the digit models, 10% for fashion_mlp; `python -m
loadtest.run_loadtest` prints the expected rate beside the measured one). Environment:
LOADTEST_WAIT_MAX (seconds a user waits between requests, uniform from 0, default 0.1),
LOADTEST_MODELS (comma-separated subset).
"""
from __future__ import annotations

import json
import os
import random

import gevent
from locust import FastHttpUser, between, events, task

from export.heldout import held_out
from handlers import contract

MODEL_WEIGHTS = {"lenet5": 5, "mnist_net": 3, "fashion_mlp": 2}
TRANSPORT_WEIGHTS = {"png": 80, "multipart": 15, "json": 5}
JSON_BATCH = 8
WAIT_MAX = float(os.environ.get("LOADTEST_WAIT_MAX", "0.1"))
WRONG_LABEL = "wrong top-1 label"
# Locust's CSV files are rewritten once a second and may miss the last second; the runner
# (loadtest/run_loadtest.py) reads this file instead, written from the final statistics at exit.
SUMMARY_FILE = os.environ.get("LOADTEST_SUMMARY_FILE")


def _selected_models() -> dict[str, int]:
    wanted = [m.strip() for m in os.environ.get("LOADTEST_MODELS", "").split(",") if m.strip()]
    unknown = [m for m in wanted if m not in MODEL_WEIGHTS]
    if unknown:
        raise SystemExit(f"LOADTEST_MODELS names unknown models {unknown}; known: {', '.join(MODEL_WEIGHTS)}")
    return {m: w for m, w in MODEL_WEIGHTS.items() if not wanted or m in wanted}


MODELS = _selected_models()
DATA = {name: held_out(name) for name in MODELS}
B64 = {name: data.b64() for name, data in DATA.items()}
_CHOICES = [(m, t) for m in MODELS for t in TRANSPORT_WEIGHTS]
_WEIGHTS = [MODELS[m] * TRANSPORT_WEIGHTS[t] for m, t in _CHOICES]
# Reading the data sets above takes seconds without yielding to gevent, whose loop caches "now":
# refresh it, or Locust's --run-time timer, scheduled from the stale time, fires seconds early.
gevent.get_hub().loop.update_now()


def check_answer(answer, model: str, labels: list[str], expected: str) -> str | None:
    """None when the answer keeps the contract (handlers/contract.py) and names the expected label,
    else what is wrong."""
    try:
        label = contract.check_prediction(answer, labels, model)
    except contract.ContractError as err:
        return f"contract: {err.part}"
    return None if label == expected else WRONG_LABEL


def check_response(response, model: str, expected: list[str] | str) -> str | None:
    if response.status_code != 200:
        return f"HTTP {response.status_code}"
    try:
        answer = json.loads(response.content)
    except (ValueError, TypeError):
        return "contract: not JSON"
    labels = get_labels(model)
    if isinstance(expected, list):
        if not isinstance(answer, list) or len(answer) != len(expected):
            return "contract: not a list of one answer per image"
        problems = [check_answer(a, model, labels, e) for a, e in zip(answer, expected)]
        return next((p for p in problems if p and p != WRONG_LABEL), None) or \
            (WRONG_LABEL if WRONG_LABEL in problems else None)
    return check_answer(answer, model, labels, expected)


def multipart(field: str, filename: str, content: bytes, content_type: str) -> tuple[bytes, str]:
    """A multipart/form-data body with one file field, as a browser's FormData upload sends it."""
    boundary = f"----loadtest{random.getrandbits(64):016x}"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode("ascii") + content
    body += f"\r\n--{boundary}--\r\n".encode("ascii")
    return body, f"multipart/form-data; boundary={boundary}"


_LABELS: dict[str, list[str]] = {}


def get_labels(model: str) -> list[str]:
    if model not in _LABELS:
        from model_defs.registry import get_spec
        _LABELS[model] = list(get_spec(model).labels)
    return _LABELS[model]


class ImageClient(FastHttpUser):
    """One client: picks a model and a transport by the mix, posts a held-out image, checks it."""
    wait_time = between(0.0, WAIT_MAX)

    @task
    def classify(self):
        model, transport = random.choices(_CHOICES, weights=_WEIGHTS)[0]
        data = DATA[model]
        path = f"/predictions/{model}"
        if transport == "json":
            picks = [random.randrange(len(data)) for _ in range(JSON_BATCH)]
            body = json.dumps({"instances": [B64[model][i] for i in picks]})
            expected: list[str] | str = [data.labels[i] for i in picks]
            request = dict(data=body, headers={"Content-Type": "application/json"})
        else:
            i = random.randrange(len(data))
            expected = data.labels[i]
            if transport == "png":
                request = dict(data=data.pngs[i], headers={"Content-Type": "image/png"})
            else:
                body, content_type = multipart("data", "image.png", data.pngs[i], "image/png")
                request = dict(data=body, headers={"Content-Type": content_type})
        name = f"{model} {transport}" + (f" x{JSON_BATCH}" if transport == "json" else "")
        with self.client.post(path, name=name, catch_response=True, **request) as response:
            problem = check_response(response, model, expected)
            if problem:
                response.failure(problem)
            else:
                response.success()


@events.quit.add_listener
def _write_final_summary(exit_code, **_):
    """The final statistics, after the last user stopped (see SUMMARY_FILE)."""
    if not SUMMARY_FILE or _ENVIRONMENT.get("env") is None or _ENVIRONMENT["env"].runner is None:
        return
    stats = _ENVIRONMENT["env"].runner.stats
    total = stats.total
    summary = {
        "requests": total.num_requests, "failures": total.num_failures, "rps": total.total_rps,
        "p50_ms": total.get_response_time_percentile(0.50), "p95_ms": total.get_response_time_percentile(0.95),
        "p99_ms": total.get_response_time_percentile(0.99), "mean_ms": total.avg_response_time,
        "max_ms": total.max_response_time,
        "entries": {name: {"requests": e.num_requests, "failures": e.num_failures}
                    for (name, _method), e in stats.entries.items()},
        "errors": [{"name": e.name, "error": str(e.error), "occurrences": e.occurrences}
                   for e in stats.errors.values()],
        "exit_code": exit_code,
    }
    with open(SUMMARY_FILE, "w") as f:
        json.dump(summary, f, indent=1)


_ENVIRONMENT: dict = {}


@events.init.add_listener
def _remember_environment(environment, **_):
    _ENVIRONMENT["env"] = environment
