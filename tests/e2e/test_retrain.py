"""make train's pipeline end to end on one model, as a user who changes it would run it: lenet5
retrained on all of MNIST (one epoch of its plan: the shipped weights took 20), exported, checked,
archived and served, answering over HTTP as well as it did offline. The shipped weights' own accuracy
is held by tests/e2e/test_serving.py."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from export.datasets import load_held_out
from handlers.contract import check_prediction
from handlers.png import png_bytes
from model_defs.registry import MODELS, get_spec
from reliability import probe
from serving.server import running
from settings.ports import Ports
from tests.support.paths import MODEL_STORE
from tests.support.paths import REPO as ROOT

pytestmark = pytest.mark.e2e
SENT = 300  # held-out test digits sent to the served model


def pipeline(step: str, *args: str) -> None:
    run = subprocess.run([sys.executable, "-m", f"export.{step}", "--models", "lenet5", *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"export.{step} failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"


def test_lenet5_retrained_exported_archived_and_served(tmp_path):
    artifacts, store = tmp_path / "artifacts", tmp_path / "store"
    pipeline("train", "--epochs", "1", "--out", str(artifacts))
    metrics = json.loads((artifacts / "lenet5" / "metrics.json").read_text())
    # one epoch on 51,257 digits: 98.2-98.5% on validation here; the floor says it learned, not how well
    assert metrics["validation_accuracy"] >= 0.97 and metrics["train_images"] == 51_257, metrics
    pipeline("to_torchscript", "--artifacts", str(artifacts))
    pipeline("archive", "--artifacts", str(artifacts), "--store", str(store), "--build", str(tmp_path / "build"))
    for other in set(MODELS) - {"lenet5"}:
        (store / f"{other}.mar").symlink_to(MODEL_STORE / f"{other}.mar")

    manifest = json.loads((artifacts / "lenet5" / "manifest.json").read_text())
    _, images, labels = load_held_out(get_spec("lenet5"), manifest)
    with running(run_dir=tmp_path / "run", model_store=store, ports=Ports.free(), timeout=120) as server:
        answers = [probe.post(f"{server.inference_url}/predictions/lenet5", png_bytes(images[i])).json()
                   for i in range(SENT)]
    top = [check_prediction(answer, get_spec("lenet5").labels) for answer in answers]
    correct = sum(label == str(int(labels[i])) for i, label in enumerate(top))
    assert correct / SENT >= 0.96, f"{correct}/{SENT} right over HTTP"


def test_training_is_repeatable_byte_for_byte(tmp_path):
    """Seeded, one thread: the same run twice makes the same checkpoint (scikit-learn's digits, 2 epochs)."""
    for run in ("a", "b"):
        pipeline("train", "--dataset", "digits", "--epochs", "2", "--out", str(tmp_path / run))
    first, second = ((tmp_path / run / "lenet5" / "checkpoint.pt").read_bytes() for run in ("a", "b"))
    assert first == second
