"""Real held-out images, PNG-encoded the way clients send them, with their labels.

The digit models' held-out split comes from the data source their manifest names (scikit-learn's
digits, or the real MNIST files the models were trained on, as their export manifest records);
fashion_mlp's is Fashion-MNIST's official test split. Both the Locust scenario and the
benchmark client send these bytes unchanged.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from functools import lru_cache

from export import artifacts
from export.datasets import load_held_out
from handlers.png import png_bytes
from model_defs.registry import get_spec


@dataclass(frozen=True)
class HeldOutPNGs:
    model: str
    source: str
    pngs: tuple[bytes, ...]
    labels: tuple[str, ...]          # the expected top-1 label of each image, as the server names it
    heldout_accuracy: float | None   # from artifacts/<model>/metrics.json, when it is there

    def __len__(self) -> int:
        return len(self.pngs)

    def b64(self) -> list[str]:
        return [base64.b64encode(p).decode("ascii") for p in self.pngs]


@lru_cache(maxsize=None)
def held_out(model: str, limit: int | None = None) -> HeldOutPNGs:
    """The model's held-out images as PNG bytes (the first `limit`, or all)."""
    spec = get_spec(model)
    source, images, labels = load_held_out(spec, artifacts.manifest(model))
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return HeldOutPNGs(
        model=model, source=source,
        pngs=tuple(png_bytes(img) for img in images),
        labels=tuple(spec.labels[int(y)] for y in labels),
        heldout_accuracy=artifacts.metrics(model).get("heldout_accuracy"),
    )
