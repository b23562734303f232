"""evaluation/ (evaluate, client, figures, report) against a stub server on loopback (no
TorchServe): accuracy, errors, confusion matrices, worst-mistake figures, EVALUATION.md, the
loopback-only rule, a clear message when nothing answers, and evaluation/sets.py's named sets."""
from __future__ import annotations

import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image

from evaluation import client, evaluate, figures, sets
from model_defs.registry import get_spec


class _Stub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, answers: dict[bytes, tuple[int, float] | int]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answers = answers  # sha256 -> (index, confidence), or an HTTP status to answer with


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, status: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send(200, {"status": "Healthy"})

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        model = self.path.rsplit("/", 1)[-1]
        labels = get_spec(model).labels
        answer = self.server.answers.get(hashlib.sha256(body).digest(), (0, 0.5))
        if isinstance(answer, int):
            self._send(answer, {"error": "corrupt_image", "message": "stub"})
            return
        index, confidence = answer
        rest = (1 - confidence) / (len(labels) - 1)
        probabilities = {label: (confidence if i == index else rest) for i, label in enumerate(labels)}
        self._send(200, {"model": model, "label": labels[index], "index": index, "probabilities": probabilities})


@pytest.fixture()
def stub():
    servers = []

    def start(answers):
        server = _Stub(answers)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_sets_are_named_data_with_models_and_targets():
    assert set(sets.SET_NAMES) == {"mnist_png", "sklearn_png", "photos", "typed", "fashion_png"}
    assert sets.SPECS["mnist_png"].models == ("lenet5", "mnist_net")
    assert sets.SPECS["mnist_png"].targets == {"lenet5": 0.992, "mnist_net": 0.993}
    for name in ("sklearn_png", "photos", "typed"):
        assert sets.SPECS[name].targets == {"lenet5": 0.99, "mnist_net": 0.99}
    assert sets.SPECS["photos"].content_type == "image/jpeg" and sets.SPECS["photos"].rows == 2000
    assert "LeCun et al. 1998" in sets.SPECS["mnist_png"].published["lenet5"]
    assert sets.SPECS["fashion_png"].models == ("fashion_mlp",) and sets.SPECS["fashion_png"].targets == {
        "fashion_mlp": 0.905}


def test_sklearn_set_is_the_held_out_split_as_png():
    full = sets.build("sklearn_png")
    assert len(full) == 540
    png, label = full.items[0]
    assert png.startswith(b"\x89PNG") and 0 <= label <= 9
    assert np.asarray(Image.open(__import__("io").BytesIO(png))).shape == (8, 8)
    small = sets.build("sklearn_png", limit=30)
    assert len(small) == 30 and {label for _, label in small.items} == set(range(10))
    assert all(item in full.items for item in small.items)
    assert sets.build("sklearn_png", limit=30).items == small.items


def test_photos_are_the_same_pictures_whatever_the_limit():
    try:
        small = sets.build("photos", limit=3, workers=1)
        again = sets.build("photos", limit=3, workers=1)
    except FileNotFoundError as err:
        pytest.skip(f"MNIST held-out data not here: {err}")
    assert [b for b, _ in small.items] == [b for b, _ in again.items]
    assert all(b[:2] == b"\xff\xd8" for b, _ in small.items)


def test_rendered_photos_are_cached_between_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(sets, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(sets, "CACHE_MIN", 0)
    try:
        first = sets.build("photos", limit=3, workers=1)
    except FileNotFoundError as err:
        pytest.skip(f"MNIST held-out data not here: {err}")
    cached = list(tmp_path.glob("photos-*.zip"))
    assert len(cached) == 1
    assert sets.build("photos", limit=3, workers=1).items == first.items
    assert sets.build("photos", limit=3, workers=1, cache=False).items == first.items
    assert sets.build("photos", limit=3, workers=1, seed=sets.SEED + 1).items != first.items
    assert len(list(tmp_path.glob("photos-*.zip"))) == 2


def test_evaluate_writes_accuracy_figures_and_report(stub, tmp_path):
    evalset = sets.build("sklearn_png", limit=40)
    answers = {}
    for i, (png, label) in enumerate(evalset.items):
        key = hashlib.sha256(png).digest()
        if i in (3, 7):
            answers[key] = ((label + 1) % 10, 0.99)   # confident mistakes
        elif i == 11:
            answers[key] = 500                         # an error answer counts as wrong
        else:
            answers[key] = (label, 0.9)
    url = stub(answers)
    out = tmp_path / "EVALUATION.md"
    outcomes = evaluate.evaluate(url, ["sklearn_png"], limit=40, out=out, figures=tmp_path / "fig",
                                 command="test", progress=False, workers=3)
    assert [(o.model, o.set_name) for o in outcomes] == [("lenet5", "sklearn_png"), ("mnist_net", "sklearn_png")]
    for o in outcomes:
        assert o.sent == 40 and o.correct == 37 and o.not_sent == 0
        assert sum(o.errors.values()) == 1 and "HTTP 500 corrupt_image" in o.errors
        assert figures.worst_mistakes(o, 5) == [3, 7]
        matrix = figures.confusion(o, 10)
        assert matrix.sum() == 40 and matrix[:, -1].sum() == 1 and np.trace(matrix) == 37
    report = out.read_text()
    assert "| lenet5 | scikit-learn digits held-out 30%, 8x8 PNG | 40 | 1 | 92.50% | 99.0% | not met |" in report
    assert "Command: `test`" in report and url in report
    # 37 right at 0.9 and 2 wrong at 0.99 (the error has no probability): (37 * 0.1 + 2 * 0.99) / 39
    assert "92.50%, ECE 14.56%, " in report
    for name in ("confusion-sklearn_png-lenet5.png", "confusion-sklearn_png-mnist_net.png",
                 "mistakes-lenet5.png", "mistakes-mnist_net.png", "reliability-lenet5.png", "reliability-mnist_net.png"):
        assert (tmp_path / "fig" / name).stat().st_size > 1000
        assert f"(fig/{name})" in report
    summary = json.loads((tmp_path / "fig" / "results.json").read_text())
    assert summary["results"][0]["accuracy"] == pytest.approx(0.925) and summary["results"][0]["met"] is False


def _outcome(set_name: str, confidence: list[float], right: list[bool]) -> client.Outcome:
    """An Outcome without a server: label 0 expected throughout, answered 0 when right, else 1."""
    n = len(confidence)
    predicted = np.where(right, 0, 1)
    return client.Outcome(set_name, "lenet5", np.zeros(n, np.int64), predicted, np.array(confidence))


def test_report_shows_each_sets_ece_and_links_the_reliability_diagram(tmp_path):
    import datetime as dt

    from evaluation import report
    overconfident = _outcome("mnist_png", [0.99] * 4, [True, True, False, False])   # ECE |0.5 - 0.99|
    calibrated = _outcome("sklearn_png", [0.8] * 5 + [0.6] * 5 + [0.0],
                          [True] * 4 + [False] + [True] * 3 + [False] * 3)
    calibrated.predicted[-1] = -1          # an error answer: wrong, but no probability to calibrate
    assert overconfident.reliability().ece == pytest.approx(0.49)
    assert calibrated.reliability().total == 10 and calibrated.reliability().ece == pytest.approx(0, abs=1e-12)
    fig = tmp_path / "fig"
    fig.mkdir()
    figure_files = {("mnist_png", "lenet5"): fig / "c1.png", ("sklearn_png", "lenet5"): fig / "c2.png",
                    ("mistakes", "lenet5"): fig / "m.png", ("reliability", "lenet5"): fig / "reliability-lenet5.png"}
    figures.plot_reliability("lenet5", [overconfident, calibrated], figure_files[("reliability", "lenet5")])
    png = figure_files[("reliability", "lenet5")].read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    out = tmp_path / "EVALUATION.md"
    report.write_report(out, fig, [overconfident, calibrated], {}, "http://127.0.0.1:1", "test",
                        dt.datetime(2024, 1, 1), 1.0, 0, None, figure_files)
    text = out.read_text()
    assert "2/4 = 50.00%, ECE 49.00%, " in text and "7/11 = 63.64%, ECE 0.00%, " in text
    assert "![lenet5 reliability](fig/reliability-lenet5.png)" in text


def test_reliability_diagram_of_a_set_without_answers_is_still_drawn(tmp_path):
    silent = _outcome("photos", [0.0] * 3, [False] * 3)
    silent.predicted[:] = -1
    assert silent.reliability().total == 0
    figures.plot_reliability("lenet5", [silent], tmp_path / "r.png")
    assert (tmp_path / "r.png").read_bytes().startswith(b"\x89PNG")


def test_typed_results_are_broken_down_per_font_family(stub, tmp_path):
    from evaluation import fonts
    if not fonts.available_families():
        pytest.skip("no font family installed (make fonts)")
    evalset = sets.build("typed", limit=60)
    answers = {hashlib.sha256(b).digest(): (label, 0.9) for b, label in evalset.items}
    url = stub(answers)
    out = tmp_path / "EVALUATION.md"
    outcomes = evaluate.evaluate(url, ["typed"], models=["lenet5"], limit=60, out=out, figures=tmp_path / "fig",
                                 progress=False)
    assert outcomes[0].accuracy == 1.0
    report = out.read_text()
    assert "## Typed digits per font family" in report
    for family in set(evalset.groups):
        assert f"| {family} | " in report


def test_time_limit_leaves_the_rest_unsent(stub, tmp_path):
    evalset = sets.build("sklearn_png", limit=20)
    url = stub({})
    outcome = client.run_model(url, "lenet5", evalset, workers=2, timeout=5, deadline=0.0, progress=False)
    assert outcome.not_sent == 20 and outcome.sent == 0


def test_only_loopback_servers():
    for url in ("http://10.0.0.5:8080", "http://example.com:8080", "https://127.0.0.1:8080"):
        with pytest.raises(ValueError):
            client.check_url(url)
    for url in ("http://127.0.0.1:8080", "http://localhost:18080/", "http://[::1]:8080"):
        assert client.check_url(url) == url.rstrip("/")


def test_nothing_answering_says_start_it_with_make_serve(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert evaluate.main(["--url", f"http://127.0.0.1:{port}", "--sets", "sklearn_png", "--no-progress"]) == 2
    assert "start it with `make serve`" in capsys.readouterr().err
