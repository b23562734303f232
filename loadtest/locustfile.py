"""Locust scenario: clients posting real held-out images to the three models, every answer checked.

    make loadtest [USERS=16] [SPAWN_RATE=4] [DURATION=30s] [HOST=http://127.0.0.1:8080]
    .venv/bin/locust -f loadtest/locustfile.py                          # with Locust's web UI

The mix (weights, from what a digit-recognition front end with a fashion catalogue would see):
- models: lenet5 50%, mnist_net 30%, fashion_mlp 20%;
- transports: the PNG as the raw body (curl -T, most API clients) 80%, a multipart form upload
  (browsers) 15%, a JSON batch of 8 base64 PNGs ({"instances": [...]}) 5%.
Images are the models' real held-out images as PNG (export/heldout.py), picked at random.

Every answer is checked: status 200, the answer contract (handlers/contract.py: {"model", "label",
"index", "probabilities"}, probabilities summing to 1), and top-1 against the image's true label.
A wrong answer is a failure ("wrong top-1 label"), so Locust's failure rate includes the models' own
held-out error. At the end it prints its verdict (loadtest/verdict.py: each model's wrong answers
beside what its held-out accuracy expects) and exits 1 on any transport or contract error. The host
is make serve's (127.0.0.1, INFERENCE_PORT) unless --host says otherwise; nothing answering its /ping
stops the run before it starts. Environment: LOADTEST_WAIT_MAX (seconds a user waits between
requests, uniform from 0, default 0.1), LOADTEST_MODELS (comma-separated subset).
"""
from __future__ import annotations

import json
import os
import random
import sys
import urllib.error
import urllib.request

import gevent
from locust import FastHttpUser, between, events, task

from export.heldout import held_out
from handlers import contract
from loadtest.verdict import WRONG_LABEL, heldout_error_rates, verdict
from settings.ports import HOST, Ports

MODEL_WEIGHTS = {"lenet5": 5, "mnist_net": 3, "fashion_mlp": 2}
TRANSPORT_WEIGHTS = {"png": 80, "multipart": 15, "json": 5}
JSON_BATCH = 8
WAIT_MAX = float(os.environ.get("LOADTEST_WAIT_MAX", "0.1"))


def _selected_models() -> dict[str, int]:
    wanted = [m.strip() for m in os.environ.get("LOADTEST_MODELS", "").split(",") if m.strip()]
    unknown = [m for m in wanted if m not in MODEL_WEIGHTS]
    if unknown:
        raise SystemExit(f"LOADTEST_MODELS names unknown models {unknown}; known: {', '.join(MODEL_WEIGHTS)}")
    return {m: w for m, w in MODEL_WEIGHTS.items() if not wanted or m in wanted}


MODELS = _selected_models()
DATA: dict = {}  # model -> its held-out images, read once the server answers (_start)
B64: dict = {}
_CHOICES = [(m, t) for m in MODELS for t in TRANSPORT_WEIGHTS]
_WEIGHTS = [MODELS[m] * TRANSPORT_WEIGHTS[t] for m, t in _CHOICES]


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
    host = f"http://{HOST}:{Ports.from_env().inference}"  # make serve's, unless --host
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


def ping_problem(host: str, timeout: float = 5.0) -> str | None:
    """None when `host`/ping answers, else what is wrong and what to do."""
    url = host.rstrip("/") + "/ping"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return f"{url} answered {err.code}: the server wants a token; run this against a server with token auth off"
        return f"{url} answered HTTP {err.code}; is it a TorchServe inference address?"
    except (urllib.error.URLError, OSError) as err:
        return (f"no server answers at {url} ({getattr(err, 'reason', err)}). Start one with `make serve`, "
                "or point the load test at one: make loadtest HOST=http://host:port")
    return None


@events.init.add_listener
def _start(environment, **_):
    """Stop at once when nothing answers; else read the held-out images."""
    problem = ping_problem(environment.host or ImageClient.host)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(1)
    for name in MODELS:
        DATA[name] = held_out(name)
        B64[name] = DATA[name].b64()
    # gevent's loop cached "now" while reading; a stale one fires Locust's --run-time timer seconds early
    gevent.get_hub().loop.update_now()


_VERDICT: list[str] = []


@events.quitting.add_listener
def _judge(environment, **_):
    """Set the exit code from the final statistics; the verdict is printed after Locust's own tables."""
    stats = environment.stats
    requests = {name: entry.num_requests for (name, _method), entry in stats.entries.items()}
    failures = [(e.name, str(e.error), e.occurrences) for e in stats.errors.values()]
    passed, lines = verdict(requests, failures, heldout_error_rates())
    _VERDICT[:] = lines
    # Locust's own rule (1 on any failure) would fail every run on the models' own wrong answers
    exceptions = environment.runner is not None and environment.runner.exceptions
    environment.process_exit_code = 0 if passed and not exceptions else 1


@events.quit.add_listener
def _print_verdict(**_):
    print("\n" + "\n".join(_VERDICT), flush=True)
