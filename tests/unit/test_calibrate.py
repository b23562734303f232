"""The calibrated temperature: fitted on the validation part, kept only when it helps there, and
divided into the exported model's outputs before its softmax."""
import json
import shutil

import numpy as np
import torch

from export import calibrate
from export.to_torchscript import ServingModel, load_serving_model
from model_defs.registry import get_spec
from tests.support.paths import artifact


def test_the_serving_model_divides_its_outputs_by_the_temperature():
    net = get_spec("lenet5").build().eval()
    images = torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        logits = net((images.float() / 255.0 - 0.1) / 0.3)
        warm = ServingModel(net, 0.1, 0.3, temperature=2.0)(images)
        plain = ServingModel(net, 0.1, 0.3)(images)
    assert torch.allclose(warm, torch.softmax(logits / 2.0, dim=1), atol=1e-6)
    assert torch.allclose(plain, torch.softmax(logits, dim=1), atol=1e-6)
    assert (warm.argmax(1) == plain.argmax(1)).all()  # a temperature never changes an answer's label


def test_calibrate_writes_the_temperature_it_keeps_and_the_figures_behind_it(tmp_path):
    model_dir = tmp_path / "lenet5"
    model_dir.mkdir()
    shutil.copyfile(artifact("lenet5", "checkpoint.pt"), model_dir / "checkpoint.pt")
    shutil.copyfile(artifact("lenet5", "metrics.json"), model_dir / "metrics.json")
    record = calibrate.calibrate("lenet5", tmp_path)
    kept = record["validation_ece_with_fitted"] < record["validation_ece"]
    assert record["temperature"] == (record["fitted_temperature"] if kept else 1.0)
    assert 0 <= record["heldout_ece"] < 0.05
    assert json.loads((model_dir / "metrics.json").read_text())["calibration"] == record
    _, checkpoint = load_serving_model(get_spec("lenet5"), model_dir / "checkpoint.pt")
    assert checkpoint["temperature"] == record["temperature"] and np.isfinite(record["fitted_temperature"])
