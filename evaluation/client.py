"""The evaluation's HTTP side: one model's answers to every picture of a set, from a server on
this machine.

Each picture is one POST of its bytes (PNG or JPEG, as a client sends it) to /predictions/<model>,
from a bounded thread pool, each request with a timeout and the whole run before a deadline
(pictures not sent by then are counted as not sent). Only loopback servers are accepted.
"""
from __future__ import annotations

import ipaddress
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np
import requests

from evaluation import sets as eval_sets
from export import calibration
from handlers import contract
from model_defs.registry import get_spec
from settings.ports import HOST, Ports


class ServerDown(RuntimeError):
    """Nothing answers at the URL."""


@dataclass
class Outcome:
    """One model on one set."""
    set_name: str
    model: str
    expected: np.ndarray                 # label index per picture
    predicted: np.ndarray                # -1 when not answered (error or not sent)
    confidence: np.ndarray               # the top probability (0 when not answered)
    errors: Counter = field(default_factory=Counter)
    not_sent: int = 0
    seconds: float = 0.0

    @property
    def sent(self) -> int:
        return len(self.expected) - self.not_sent

    @property
    def correct(self) -> int:
        return int(np.count_nonzero(self.predicted == self.expected))

    @property
    def accuracy(self) -> float:
        return self.correct / self.sent if self.sent else float("nan")

    def reliability(self, bins: int = calibration.ECE_BINS) -> calibration.Reliability:
        """Calibration of the answered pictures' top probabilities (.ece); an unanswered one has none."""
        answered = self.predicted >= 0
        return calibration.binned_reliability(self.confidence[answered],
                                              (self.predicted == self.expected)[answered], bins)


def default_url() -> str:
    return f"http://{HOST}:{Ports.from_env().inference}"


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"{url!r}: expected http://host:port")
    host = parts.hostname
    loopback = host == "localhost"
    if not loopback:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
    if not loopback:
        raise ValueError(f"{url!r}: this evaluation only talks to a server on this machine "
                         "(127.0.0.0/8, ::1, localhost)")
    return url.rstrip("/")


def check_server(url: str) -> None:
    try:
        requests.get(f"{url}/ping", timeout=5)
    except requests.RequestException as err:
        raise ServerDown(f"nothing answers at {url} ({type(err).__name__}): start it with `make serve`, "
                         f"then run this again") from None


class Poster:
    """Thread-local keep-alive sessions."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.local = threading.local()

    def post(self, url: str, body: bytes, content_type: str, labels: tuple[str, ...]):
        """POST one picture -> ((index, probability of the label), None), or (None, what went wrong)."""
        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = requests.Session()
        try:
            response = session.post(url, data=body, headers={"Content-Type": content_type}, timeout=self.timeout)
        except requests.RequestException as err:
            return None, type(err).__name__
        if response.status_code != 200:
            try:
                code = response.json().get("error") or response.json().get("code")
            except ValueError:
                code = None
            return None, f"HTTP {response.status_code}" + (f" {code}" if code else "")
        try:
            answer = response.json()
            label = contract.check_prediction(answer, labels)
        except ValueError:  # not JSON, or a contract.ContractError
            return None, "bad answer"
        return (answer["index"], float(answer["probabilities"][label])), None


def run_model(url: str, model: str, evalset: eval_sets.EvalSet, workers: int, timeout: float,
              deadline: float, progress: bool = True) -> Outcome:
    """POST every picture of the set to the model; bounded by `workers` and the `deadline`."""
    n = len(evalset)
    expected = np.array([label for _, label in evalset.items], dtype=np.int64)
    predicted = np.full(n, -1, dtype=np.int64)
    confidence = np.zeros(n, dtype=np.float64)
    errors: Counter = Counter()
    sent = np.zeros(n, dtype=bool)
    poster = Poster(timeout)
    endpoint = f"{url}/predictions/{model}"
    content_type = evalset.spec.content_type
    labels = get_spec(model).labels

    def one(i: int):
        if time.monotonic() >= deadline:
            return i, None, None
        sent[i] = True
        return (i, *poster.post(endpoint, evalset.items[i][0], content_type, labels))

    start = time.monotonic()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n, desc=f"{evalset.name} -> {model}", unit="img", leave=False)
    with ThreadPoolExecutor(workers) as pool:
        for future in as_completed([pool.submit(one, i) for i in range(n)]):
            i, answer, error = future.result()
            if answer is not None:
                predicted[i], confidence[i] = answer
            elif error is not None:
                errors[error] += 1
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return Outcome(evalset.name, model, expected, predicted, confidence, errors,
                   not_sent=int(n - sent.sum()), seconds=time.monotonic() - start)
