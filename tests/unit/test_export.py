"""The exported TorchScript: self-contained, verified against eager, described by its manifest,
and above the accuracy floors on held-out data."""
import copy
import json
import shutil

import numpy as np
import pytest
import torch

from export import to_torchscript
from export.to_torchscript import ExportError, export_model
from handlers.digest import sha256_of
from model_defs.registry import MODELS, get_spec
from tests.support.paths import artifact

NAMES = list(MODELS)


@pytest.mark.parametrize("name", NAMES)
def test_manifest_describes_the_file(name):
    spec = get_spec(name)
    manifest = json.loads(artifact(name, "manifest.json").read_text())
    assert manifest["sha256"] == sha256_of(artifact(name, "model.pt"))
    assert manifest["torch_version"] == torch.__version__
    assert manifest["input_shape"] == [1, *spec.input_size]
    assert manifest["input_dtype"] == "uint8"
    assert manifest["labels"] == list(spec.labels)
    assert manifest["parity_max_abs_difference"] <= to_torchscript.PARITY_TOLERANCE
    assert manifest["parity_images"] >= 500


@pytest.mark.parametrize("name", NAMES)
def test_torchscript_takes_uint8_and_returns_probabilities(name, scripted):
    spec = get_spec(name)
    images = torch.randint(0, 256, (5, 1, *spec.input_size), dtype=torch.uint8)
    with torch.inference_mode():
        probs = scripted(name)(images)
    assert probs.shape == (5, 10)
    assert torch.allclose(probs.sum(dim=1), torch.ones(5), atol=1e-5)
    assert (probs >= 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_accuracy_floor_on_held_out(name, scripted, held_out):
    """The registry's accuracy floors, measured on the exported model, equal to what training reported."""
    data = held_out(name)
    with torch.inference_mode():
        probs = torch.cat([scripted(name)(torch.from_numpy(chunk).unsqueeze(1))
                           for chunk in np.array_split(data.canonical, max(1, len(data) // 1000))])
    accuracy = float((probs.argmax(dim=1).numpy() == data.labels).mean())
    assert accuracy >= get_spec(name).accuracy_floor, f"{name}: {accuracy:.4f} below the floor"
    metrics = json.loads(artifact(name, "metrics.json").read_text())
    # the weights may come from another CPU, whose float kernels can tip a borderline digit or two
    assert accuracy == pytest.approx(metrics["heldout_accuracy"], abs=2 / len(data))
    assert set(metrics) >= {"heldout_accuracy", "per_class_accuracy", "epochs", "seconds"}
    assert artifact(name, "training.png").stat().st_size > 10_000


def _copy_checkpoint(tmp_path, name="lenet5"):
    model_dir = tmp_path / name
    model_dir.mkdir()
    shutil.copy(artifact(name, "checkpoint.pt"), model_dir / "checkpoint.pt")
    return model_dir


def test_export_is_reproducible(tmp_path, scripted, held_out):
    """Exporting the same checkpoint again gives the same manifest and the same answers."""
    model_dir = _copy_checkpoint(tmp_path)
    manifest = export_model(get_spec("lenet5"), model_dir)
    reference = json.loads(artifact("lenet5", "manifest.json").read_text())
    for key in ("input_shape", "labels", "normalisation", "data_source", "torch_version", "parity_images"):
        assert manifest[key] == reference[key], key
    images = torch.from_numpy(held_out("lenet5").canonical).unsqueeze(1)
    again = torch.jit.load(str(model_dir / "model.pt"))
    with torch.inference_mode():
        assert torch.equal(again(images), scripted("lenet5")(images))


def test_export_fails_when_torchscript_drifts_from_eager(tmp_path, monkeypatch):
    real_script = torch.jit.script

    def drifting_script(module):
        scripted = real_script(copy.deepcopy(module))  # scripting shares parameters: copy first
        with torch.no_grad():
            next(scripted.parameters()).add_(1e-2)
        return scripted

    monkeypatch.setattr(to_torchscript.torch.jit, "script", drifting_script)
    model_dir = _copy_checkpoint(tmp_path)
    with pytest.raises(ExportError, match="differs from eager"):
        export_model(get_spec("lenet5"), model_dir)
    assert not (model_dir / "model.pt").exists()


def test_export_without_checkpoint_says_make_train(tmp_path):
    with pytest.raises(ExportError, match="make train"):
        export_model(get_spec("lenet5"), tmp_path)
