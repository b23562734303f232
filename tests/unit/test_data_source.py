"""Training on your own MNIST files: the data source and folder travel from `make train` through
the checkpoint to the export check and the held-out images the tests and load tests send; without
`make train`, the checked-in weights."""
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


def dry_run(*make_args: str) -> str:
    return subprocess.run(["make", "-n", "--no-print-directory", *make_args], cwd=ROOT, check=True,
                          capture_output=True, text=True, timeout=60).stdout


def test_make_train_passes_the_data_source_and_your_folder_to_training(tmp_path):
    assert "export.train --models lenet5 --dataset mnist  --out" in dry_run("train-lenet5")
    assert f'--dataset mnist --data-dir "{ROOT / "mnist"}"' in dry_run("train-lenet5", "DATA_DIR=mnist")
    assert "--dataset digits" in dry_run("train-lenet5", "DATASET=digits")


def test_a_fresh_clone_serves_the_checked_in_weights(tmp_path):
    assert f"export.weights install lenet5 --artifacts {tmp_path}" in dry_run(
        f"ARTIFACTS={tmp_path}", f"{tmp_path}/lenet5/checkpoint.pt")
