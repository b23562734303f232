"""Which pixels of the canonical input pushed the model toward its answer, and pictures of them.

The saliency served is gradient x input on the TorchScript model: the gradient of the answer's
log-probability with respect to the canonical image (a float tensor in 0..255: the exported
models start with `images.to(float32) / 255`, so gradients flow through them), times the image.
Positive values pushed toward the answer; black pixels get none. All explained images of a batch
go through one forward and one backward pass. Gradient x input rather than Integrated Gradients:
IG cost several times more and its top pixels mattered no more to the answer (handlers/README.md).
"""
from __future__ import annotations

import base64

import numpy as np
import torch

from handlers.png import png_bytes


def _target_log_prob(model, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    probabilities = model(images)
    return torch.log(probabilities.gather(1, targets[:, None]).clamp_min(1e-30)).sum()


def gradient_x_input(model, images: np.ndarray, targets: np.ndarray, device="cpu") -> np.ndarray:
    """uint8 [N, H, W], class indices [N] -> attributions float32 [N, H, W]: one forward, one backward."""
    x = torch.from_numpy(images).to(device=device, dtype=torch.float32).unsqueeze(1).requires_grad_(True)
    target = torch.as_tensor(targets, device=device, dtype=torch.int64)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(_target_log_prob(model, x, target), x)
    return (x * grad)[:, 0].detach().cpu().numpy()


def png_base64(image: np.ndarray) -> str:
    """A uint8 H x W (grey) or H x W x 3 (RGB) array as a base64 PNG, as answers carry pictures."""
    return base64.b64encode(png_bytes(image, optimize=True)).decode("ascii")


def canonical_png(canonical: np.ndarray) -> str:
    """The canonical input as the model saw it: grey H x W PNG, base64."""
    return png_base64(canonical)


def heatmap_png(canonical: np.ndarray, saliency: np.ndarray) -> str:
    """Positive saliency in red over the dimmed canonical input: RGB H x W PNG, base64."""
    positive = np.clip(saliency, 0, None)
    top = positive.max()
    heat = positive / top if top > 0 else positive
    grey = canonical.astype(np.float32) * 0.5
    rgb = np.stack([grey + (255 - grey) * heat, grey * (1 - heat), grey * (1 - heat)], axis=-1)
    return png_base64(np.rint(rgb).astype(np.uint8))
