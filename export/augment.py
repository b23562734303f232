"""Training-time augmentation of canonical digits: the ways real inputs differ from MNIST.

Applied to each training batch of canonical images (after `canonicalize`), seeded by the trainer's
generator so a run is reproducible:
- affine: rotation, scale, shear and shift (hand-held photos, tilted paper, imperfect framing);
- elastic: a smooth random displacement field (Simard et al. 2003), the way one writer's strokes
  wobble from another's (off by default: a TrainingPlan turns it on);
- stroke thickness: thicker (markers, bold fonts) or thinner (fine pens);
- blur (out-of-focus photos, JPEG), contrast (gamma: faint pencil to saturated marker);
- sensor noise.
Each effect is drawn per image with its own probability; the untouched image stays common.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class DigitAugment:
    rotation_deg: float = 12.0
    scale: tuple[float, float] = (0.8, 1.1)
    shear: float = 0.25          # x-shear factor
    shift_px: float = 2.5
    p_thicker: float = 0.25
    p_thinner: float = 0.2
    p_blur: float = 0.3
    p_noise: float = 0.3
    noise_std: float = 0.1       # of full scale, at most
    gamma: tuple[float, float] = (0.6, 1.6)
    p_elastic: float = 0.0
    # displacement scale, pixels of a 28-pixel frame: Simard et al.'s 34 did worse than 17 for mnist_net
    # on the validation split
    elastic_alpha: float = 17.0
    elastic_sigma: float = 4.0   # smoothness of the field, pixels of a 28-pixel frame (their 4)

    @classmethod
    def scaled(cls, strength: float, p_elastic: float = 0.0) -> "DigitAugment":
        """Every range and probability times `strength` (1 = the defaults, 0 = nothing changes), and
        elastic distortion with probability `p_elastic`."""
        full = cls()
        return cls(p_elastic=p_elastic, rotation_deg=full.rotation_deg * strength,
                   scale=(1 - (1 - full.scale[0]) * strength, 1 + (full.scale[1] - 1) * strength),
                   shear=full.shear * strength, shift_px=full.shift_px * strength,
                   p_thicker=full.p_thicker * strength, p_thinner=full.p_thinner * strength,
                   p_blur=full.p_blur * strength, p_noise=full.p_noise * strength,
                   noise_std=full.noise_std,
                   gamma=(1 - (1 - full.gamma[0]) * strength, 1 + (full.gamma[1] - 1) * strength))

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """uint8 [N, H, W] -> float [N, H, W] in 0..1, augmented."""
        x = images.float().div(255.0).unsqueeze(1)
        x = self._affine(x, generator)
        x = self._thickness(x, generator)
        x = self._blend(x, _blur(x), self.p_blur, generator)
        x = x.clamp(0, 1) ** _uniform(len(x), *self.gamma, generator).view(-1, 1, 1, 1)
        noisy = torch.rand(len(x), 1, 1, 1, generator=generator) < self.p_noise
        sigma = _uniform(len(x), 0.0, self.noise_std, generator).view(-1, 1, 1, 1)
        x = x + noisy * sigma * torch.randn(x.shape, generator=generator)
        return x.clamp(0, 1).squeeze(1)

    def _affine(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        angle = _uniform(n, -self.rotation_deg, self.rotation_deg, generator) * (math.pi / 180)
        scale = _uniform(n, *self.scale, generator)
        shear = _uniform(n, -self.shear, self.shear, generator)
        shift = _uniform(2 * n, -self.shift_px, self.shift_px, generator).view(n, 2) * torch.tensor([2 / w, 2 / h])
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        # output -> input sampling matrix: rotation and scale, then x-shear
        theta = torch.stack([
            torch.stack([cos, -sin + shear * cos, shift[:, 0]], dim=1),
            torch.stack([sin, cos + shear * sin, shift[:, 1]], dim=1),
        ], dim=1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        if self.p_elastic > 0:
            grid = grid + self._elastic_field(n, h, w, generator)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _elastic_field(self, n: int, h: int, w: int, generator: torch.Generator) -> torch.Tensor:
        """[N, H, W, 2] displacements in grid units (-1..1 spans the frame), zero for the images not chosen."""
        scale = h / 28
        sigma = self.elastic_sigma * scale
        radius = int(3 * sigma)
        taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
        taps = (taps / taps.sum()).view(1, 1, 1, -1).repeat(2, 1, 1, 1)
        noise = torch.rand(n, 2, h, w, generator=generator) * 2 - 1
        field = F.conv2d(F.pad(noise, (radius, radius, 0, 0), mode="reflect"), taps, groups=2)
        field = F.conv2d(F.pad(field, (0, 0, radius, radius), mode="reflect"), taps.transpose(2, 3), groups=2)
        chosen = (torch.rand(n, 1, 1, 1, generator=generator) < self.p_elastic).float()
        pixels = field * (self.elastic_alpha * scale) * chosen
        return (pixels * torch.tensor([2 / w, 2 / h]).view(1, 2, 1, 1)).permute(0, 2, 3, 1)

    def _thickness(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        thicker = F.max_pool2d(x, 3, stride=1, padding=1)
        thinner = -F.max_pool2d(-x, 3, stride=1, padding=1)
        x = self._blend(x, thicker, self.p_thicker, generator)
        return self._blend(x, thinner, self.p_thinner, generator, most=0.6)

    @staticmethod
    def _blend(x, other, p, generator, most: float = 1.0):
        """Per image, with probability p, move x toward `other` by a random fraction up to `most`."""
        chosen = (torch.rand(len(x), 1, 1, 1, generator=generator) < p).float()
        amount = chosen * _uniform(len(x), 0.0, most, generator).view(-1, 1, 1, 1)
        return x + amount * (other - x)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


_BLUR = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]).div(16).view(1, 1, 3, 3)


def _blur(x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, _BLUR, padding=1)
