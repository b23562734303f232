"""Every kind of picture the models were trained and evaluated on, as `canonicalize` receives it,
in named sets; with the sha256 of what `canonicalize` made of each set. The identity test
(tests/unit/test_canonical_identity.py) compares today's `canonicalize` against digests recorded
from the implementation the served models were trained with: any change there that is not bit for
bit the same on these inputs would need the models retrained.

    python -m tests.support.canonical_inputs    # prints the digests of today's canonicalize
"""
from __future__ import annotations

import hashlib
import io
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from model_defs.preprocessing import canonicalize

PHOTOS = 48        # rendered phone photos of MNIST test digits (export/photos.py), seeded
PHOTO_SEED = 15


def _mnist_test() -> list[np.ndarray]:
    from export.datasets import load_raw
    return list(load_raw("mnist").test_images)


def _sklearn_digits() -> list[np.ndarray]:
    from export.datasets import load_sklearn_digits
    x_train, _, x_test, _ = load_sklearn_digits()
    return [*x_train, *x_test]


def _fashion() -> list[np.ndarray]:
    from export.datasets import FASHION_MNIST_DIR, load_idx_dataset
    x_train, _, x_test, _ = load_idx_dataset(FASHION_MNIST_DIR, "sudo apt-get install dataset-fashion-mnist")
    return [*x_train, *x_test]


def _held_out_pngs(model: str) -> Callable[[], list]:
    """The held-out PNGs the benchmark and the evaluation send, decoded as the handler decodes them."""
    def load() -> list:
        from export.heldout import held_out
        from handlers.image_decoding import load_pixels, open_header
        from settings.limits import LIMITS
        return [load_pixels(open_header(png, LIMITS)) for png in held_out(model).pngs]
    return load


def _photos() -> list:
    from export.photos import photo_rng, render_photo
    digits = _mnist_test()[-PHOTOS:]
    return [Image.open(io.BytesIO(render_photo(d, photo_rng(PHOTO_SEED, i)))) for i, d in enumerate(digits)]


def _crafted() -> list[np.ndarray]:
    """Edge cases: blank, saturated, tiny, thin, noise, a faint mark, a lit gradient (seeded)."""
    rng = np.random.default_rng(PHOTO_SEED)
    ramp = np.add.outer(np.arange(120), np.arange(160)).astype(np.float64)
    lit = np.clip(90 + ramp * 0.8, 0, 255).astype(np.uint8)
    lit[40:80, 60:70] = 20
    faint = np.full((28, 28), 10, np.uint8)
    faint[8:20, 12:15] = 30
    return [np.zeros((28, 28), np.uint8), np.full((28, 28), 255, np.uint8), np.full((1, 1), 200, np.uint8),
            rng.integers(0, 256, (2, 5), dtype=np.uint8), rng.integers(0, 256, (50, 3), dtype=np.uint8),
            rng.integers(0, 256, (40, 40), dtype=np.uint8), faint, lit, 255 - lit,
            rng.integers(0, 256, (1100, 700), dtype=np.uint8)]


# name -> (the pictures, [(preprocessing kind, model input side), ...])
DIGIT_SIDES = [("digit", 32), ("digit", 28)]  # lenet5, mnist_net
SETS: dict[str, tuple[Callable[[], list], list[tuple[str, int]]]] = {
    "MNIST test set (28x28 arrays)": (_mnist_test, DIGIT_SIDES),
    "scikit-learn digits, all (8x8 arrays)": (_sklearn_digits, DIGIT_SIDES),
    "fashion-mnist train+test (28x28 arrays)": (_fashion, [("fashion", 28)]),
    "lenet5 held-out PNGs, decoded": (_held_out_pngs("lenet5"), DIGIT_SIDES),
    "fashion_mlp held-out PNGs, decoded": (_held_out_pngs("fashion_mlp"), [("fashion", 28)]),
    "crafted edge cases": (_crafted, DIGIT_SIDES + [("fashion", 28)]),
    f"{PHOTOS} rendered phone photos (640x480 JPEG)": (_photos, DIGIT_SIDES + [("fashion", 28)]),
}


def canonicalize_each(pictures: list, kind: str, side: int) -> Iterator[np.ndarray]:
    """`canonicalize`, picture by picture: the definition."""
    for picture in pictures:
        yield canonicalize(picture, kind, (side, side))


def digests(frame: Callable[[list, str, int], Iterator[np.ndarray]] = canonicalize_each,
            names: set[str] | None = None) -> Iterator[tuple[str, str, int, str]]:
    """(set name, kind, side, sha256 of every canonical image of the set, in order), set by set, for
    the sets named (all by default), each canonicalised by `frame(pictures, kind, side)`."""
    for name, (load, uses) in SETS.items():
        if names is not None and name not in names:
            continue
        pictures = load()
        for kind, side in uses:
            digest = hashlib.sha256()
            for canonical in frame(pictures, kind, side):
                digest.update(np.ascontiguousarray(canonical, dtype=np.uint8).tobytes())
            yield name, kind, side, f"{len(pictures)}:{digest.hexdigest()}"


if __name__ == "__main__":
    for name, kind, side, digest in digests():
        print(f'    ("{name}", "{kind}", {side}): "{digest}",')
