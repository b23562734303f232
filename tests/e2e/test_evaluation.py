"""The evaluation over HTTP against the session's real TorchServe (tests/conftest.py
`server`): a seconds-long smoke of `python -m evaluation.evaluate`, and a floor on
scikit-learn's held-out digits. The MNIST test set's floor is tests/unit/test_export.py's (the
registry's accuracy_floor, all 10,000 digits) and tests/e2e/test_serving.py's over HTTP."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from evaluation import client, fonts, sets
from tests.support.paths import REPO as ROOT

pytestmark = pytest.mark.e2e
SKLEARN_FLOOR = 0.97  # 16 misses of 540; the models trained on 9,261 digits kept it, the shipped weights give 98.5-98.9%


def test_evaluate_smoke_over_http(server, tmp_path):
    out = tmp_path / "EVALUATION.md"
    # without any font installed (`make fonts`) the typed digits cannot be drawn: every other set runs
    names = [s for s in sets.SET_NAMES if s != "typed" or fonts.available_families()]
    result = subprocess.run(
        [sys.executable, "-m", "evaluation.evaluate", "--smoke", "--limit", "10", "--url", server.inference_url,
         "--sets", ",".join(names),
         "--out", str(out), "--figures", str(tmp_path / "figures"), "--no-progress", "--time-limit", "240"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "figures" / "results.json").read_text())
    rows = {(r["model"], r["set"]): r for r in summary["results"]}
    assert set(rows) == {(m, s) for s in names for m in sets.SPECS[s].models}
    for row in rows.values():
        assert row["images"] == 10 and row["errors"] == {} and row["not_sent"] == 0, row
        assert 0.0 <= row["accuracy"] <= 1.0
    report = out.read_text()
    assert server.inference_url in report and "## Results against the targets" in report
    for model in ("lenet5", "mnist_net", "fashion_mlp"):
        assert (tmp_path / "figures" / f"mistakes-{model}.png").is_file()


@pytest.mark.parametrize("set_name", ["sklearn_png"])
@pytest.mark.parametrize("model", ["lenet5", "mnist_net"])
def test_held_out_accuracy_floor_over_http(server, set_name, model):
    """Every held-out picture, sent as PNG: at least the floor (the 99% target is EVALUATION.md's to report:
    the shipped weights give 98.52% and 98.89%, 8 and 6 of 540 wrong)."""
    evalset = sets.build(set_name)
    outcome = client.run_model(server.inference_url, model, evalset, workers=4, timeout=30,
                                 deadline=float("inf"), progress=False)
    assert outcome.errors == {} and outcome.not_sent == 0
    assert outcome.accuracy >= SKLEARN_FLOOR, (
        f"{model} on {set_name}: {outcome.correct}/{outcome.sent} = {outcome.accuracy:.2%} < {SKLEARN_FLOOR:.1%}")
