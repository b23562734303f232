"""Training-time augmentation (export/augment.py): seeded, shape-keeping, elastic distortion only when asked."""

import numpy as np
import torch

from export.augment import DigitAugment

NOTHING = dict(rotation_deg=0, scale=(1, 1), shear=0, shift_px=0, p_thicker=0, p_thinner=0, p_blur=0,
               p_noise=0, gamma=(1, 1))


def _digits(n: int = 8, side: int = 28) -> torch.Tensor:
    """Plus signs of different sizes, white on black, uint8 [n, side, side]."""
    images = torch.zeros(n, side, side, dtype=torch.uint8)
    for i in range(n):
        half = 3 + i % 6
        images[i, side // 2 - half: side // 2 + half, side // 2 - 1: side // 2 + 2] = 255
        images[i, side // 2 - 1: side // 2 + 2, side // 2 - half: side // 2 + half] = 255
    return images


def test_the_same_seed_gives_the_same_batch():
    x = _digits()
    augment = DigitAugment.scaled(0.5, p_elastic=0.5)
    a = augment(x, torch.Generator().manual_seed(7))
    b = augment(x, torch.Generator().manual_seed(7))
    assert a.shape == x.shape and torch.equal(a, b) and 0 <= float(a.min()) and float(a.max()) <= 1


def test_without_elastic_the_batch_is_what_it_was():
    """p_elastic 0 draws nothing extra: models trained without it (lenet5) train as they did. The sum
    is what export/augment.py gave for this batch and seed before elastic distortion existed."""
    augmented = DigitAugment.scaled(1.0)(_digits(), torch.Generator().manual_seed(3))
    assert abs(float(augmented.sum()) - 403.5454) < 0.01


def test_elastic_distortion_moves_strokes_smoothly_and_keeps_the_ink():
    x = _digits(16)
    identity = DigitAugment(**NOTHING)(x, torch.Generator().manual_seed(0))
    assert torch.allclose(identity, x.float() / 255, atol=1e-5)  # nothing on: the image comes back
    bent = DigitAugment(**NOTHING, p_elastic=1.0)(x, torch.Generator().manual_seed(0))
    changed = (bent - identity).abs().mean(dim=(1, 2))
    assert bool((changed > 0.01).all())  # every image distorted
    ink_ratio = bent.sum(dim=(1, 2)) / identity.sum(dim=(1, 2))
    assert float(ink_ratio.min()) > 0.7 and float(ink_ratio.max()) < 1.3  # bent, not erased or smeared
    field = DigitAugment(p_elastic=1.0)._elastic_field(4, 28, 28, torch.Generator().manual_seed(1))
    assert field.shape == (4, 28, 28, 2)
    step = (field[:, 1:] - field[:, :-1]).abs().max()  # smooth: neighbours move alike
    assert float(step) < 0.25 * float(field.abs().max())


def test_elastic_on_half_the_images_leaves_the_others_alone():
    x = _digits(64)
    only_elastic = DigitAugment(**NOTHING, p_elastic=0.5)(x, torch.Generator().manual_seed(5))
    untouched = np.isclose((only_elastic - x.float() / 255).abs().amax(dim=(1, 2)).numpy(), 0, atol=1e-5)
    assert 16 < untouched.sum() < 48
