"""Which pixels of the canonical input pushed the model toward its answer, and pictures of them.

The saliency served is gradient x input on the TorchScript model: the gradient of the answer's
log-probability with respect to the canonical image (a float tensor in 0..255: the exported
models start with `images.to(float32) / 255`, so gradients flow through them), times the image.
Positive values pushed toward the answer. All explained images of a batch go through one forward
and one backward pass.

Integrated Gradients (Sundararajan et al., 2017; black baseline, 32 midpoint steps, one batched
pass) is kept beside it because it was measured against it (20 held-out images per model, one
torch thread, 2-core machine; BENCHMARKS.md): IG cost 0.7-4.7 ms per image, gradient x input
0.08-0.9 ms, and IG was no better: zeroing the top tenth of the ink pixels by saliency dropped
the answer's probability by 0.18/0.18/0.71 (lenet5/mnist_net/fashion_mlp) with IG against
0.27/0.33/0.86 with gradient x input (0.01-0.02 for a random tenth). On the log-probability the
softmax does not saturate, which is what IG's path integral is for. With a black baseline both
give exactly zero to black pixels, so all the positive mass lies on ink by construction.
"""
from __future__ import annotations

import base64
import io

import numpy as np
import torch
from PIL import Image

IG_STEPS = 32


def _target_log_prob(model, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    probabilities = model(images)
    return torch.log(probabilities.gather(1, targets[:, None]).clamp_min(1e-30)).sum()


def integrated_gradients(model, images: np.ndarray, targets: np.ndarray, steps: int = IG_STEPS,
                         device="cpu") -> np.ndarray:
    """uint8 [N, H, W], class indices [N] -> attributions float32 [N, H, W] (black baseline)."""
    x = torch.from_numpy(images).to(device=device, dtype=torch.float32).unsqueeze(1)  # [N,1,H,W]
    n = x.shape[0]
    alphas = (torch.arange(steps, device=device, dtype=torch.float32) + 0.5) / steps
    path = (alphas.view(steps, 1, 1, 1, 1) * x.unsqueeze(0)).reshape(steps * n, *x.shape[1:])
    path.requires_grad_(True)
    target = torch.as_tensor(targets, device=device, dtype=torch.int64).repeat(steps)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(_target_log_prob(model, path, target), path)
    mean_grad = grad.reshape(steps, n, *x.shape[1:]).mean(0)
    return (x * mean_grad)[:, 0].detach().cpu().numpy()


def gradient_x_input(model, images: np.ndarray, targets: np.ndarray, device="cpu") -> np.ndarray:
    """uint8 [N, H, W], class indices [N] -> attributions float32 [N, H, W]: one forward, one backward."""
    x = torch.from_numpy(images).to(device=device, dtype=torch.float32).unsqueeze(1).requires_grad_(True)
    target = torch.as_tensor(targets, device=device, dtype=torch.int64)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(_target_log_prob(model, x, target), x)
    return (x * grad)[:, 0].detach().cpu().numpy()


def explain(model, images: np.ndarray, targets: np.ndarray, device="cpu") -> np.ndarray:
    """The method the handler serves (see the module docstring for why)."""
    return gradient_x_input(model, images, targets, device=device)


def png_base64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def canonical_png(canonical: np.ndarray) -> str:
    """The canonical input as the model saw it: grey H x W PNG, base64."""
    return png_base64(Image.fromarray(canonical, mode="L"))


def heatmap_png(canonical: np.ndarray, saliency: np.ndarray) -> str:
    """Positive saliency in red over the dimmed canonical input: RGB H x W PNG, base64."""
    positive = np.clip(saliency, 0, None)
    top = positive.max()
    heat = positive / top if top > 0 else positive
    grey = canonical.astype(np.float32) * 0.5
    rgb = np.stack([grey + (255 - grey) * heat, grey * (1 - heat), grey * (1 - heat)], axis=-1)
    return png_base64(Image.fromarray(np.rint(rgb).astype(np.uint8), mode="RGB"))


def ink_fraction(canonical: np.ndarray, saliency: np.ndarray, threshold: int = 0) -> float:
    """Share of the positive saliency mass on pixels brighter than `threshold` (1.0 if none)."""
    positive = np.clip(saliency, 0, None)
    total = positive.sum()
    return float(positive[canonical > threshold].sum() / total) if total > 0 else 1.0
