"""Our per-image work, for the servers of the benchmarks that are not TorchServe (the floor,
loadtest/floor/app.py, and the peers of make bench-peers, loadtest/peers/): lenet5's exported
model.pt on one torch thread, an encoded image -> its canonical input (our decode, limits and
`canonicalize`), and probabilities -> our answer (handlers/contract.py). Only what every one of
their virtualenvs has: torch, numpy, Pillow, scipy and this repo on PYTHONPATH."""
import json
from pathlib import Path

import numpy as np
import torch

from handlers import contract
from handlers.image_decoding import open_image
from model_defs.preprocessing import canonicalize
from settings.limits import LIMITS

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "lenet5"
META = json.loads((ARTIFACTS / "manifest.json").read_text())


def load_model() -> torch.jit.ScriptModule:
    """The exported TorchScript model (softmax baked in), with torch on one thread."""
    torch.set_num_threads(1)
    return torch.jit.load(str(ARTIFACTS / "model.pt")).eval()


def canonical_input(body: bytes) -> np.ndarray:
    """Encoded image bytes -> the model's canonical uint8 [H, W] input; InputError for a bad image."""
    return canonicalize(open_image(body, LIMITS), META["preprocessing"], tuple(META["input_size"]))


def answer(probabilities: list[float]) -> dict:
    """One image's probabilities -> our prediction answer."""
    return contract.prediction(META["name"], META["labels"], probabilities)
