"""What the benchmark sends and expects: held-out PNGs, phone photos of held-out digits, the rows,
and the answer checks."""
from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np
from PIL import Image

from export import artifacts
from export.datasets import load_held_out
from export.heldout import held_out
from export.photos import HEIGHT, WIDTH, photo_rng, render_photo
from handlers import contract
from handlers.image_decoding import open_image
from loadtest import client
from model_defs.preprocessing import canonicalize
from model_defs.registry import get_spec
from settings.limits import LIMITS
from settings.model_serving import SERVING

# the server variants (servers.py builds their stores)
HANDLER = "handler"  # our production handler and archive, as `make archive` built it
NOOP = "noop"        # loadtest/noop_handler.py with the same model-config
BATCH1 = "batch1"    # our handler with batchSize 1
PROXIED = "proxied"  # our handler as make serve and the pod run it: behind nginx (serving/proxy.py)
FLOOR = "floor"      # not TorchServe: FastAPI + uvicorn from its own virtualenv (loadtest/floor/, floor.py)
FLOOR_MODEL = "lenet5"  # the one model loadtest/floor/app.py serves: the floor rows only for it
PHOTO_SEED = 15      # the photos' seed (export/photos.photo_rng): the same pictures in every run


@dataclass(frozen=True)
class Row:
    """One row of BENCHMARKS.md: its key in bench.json, its title, its unit and where it runs."""
    key: str
    title: str
    unit: str           # "images/s" or "req/s"
    server: str | None  # the server variant it runs against; None: in process


def rows_for(model: str, images_per_request: int, floor_workers: int = 0) -> list[Row]:
    """The rows, in BENCHMARKS.md's order: the six of our stack, then (FLOOR_MODEL only) the floor on
    the same PNGs, row 3's server on phone photos, and the floor on the same photos."""
    s = SERVING[model]
    rows = [
        Row("model", f"1. {model} alone, in process, batch min(C, {s.batch_size}), {s.torch_threads} thread(s)",
            "images/s", None),
        Row("noop", "2. TorchServe, no-op handler, same settings", "req/s", NOOP),
        Row("handler", f"3. our handler, batch {s.batch_size}, our batcher (no wait)", "req/s", HANDLER),
        Row("batch1", "4. our handler, batch size 1", "req/s", BATCH1),
        Row("multi", f"5. our handler, {images_per_request} images per request as one .npy", "images/s", HANDLER),
        Row("proxied", "6. row 3 behind nginx, as deployed", "req/s", PROXIED),
    ]
    if model == FLOOR_MODEL:
        rows += [
            Row("floor", f"7. the floor: FastAPI + uvicorn, {floor_workers} worker processes, no batching",
                "req/s", FLOOR),
            Row("photos", f"8. row 3's server, {WIDTH}x{HEIGHT} JPEG phone photos of held-out digits",
                "req/s", HANDLER),
            Row("floor_photos", "9. the floor (row 7) on the same JPEG photos", "req/s", FLOOR),
        ]
    return rows


def checker(model: str, kind: str) -> client.Check:
    """kind "full": the contract (handlers/contract.py) and top-1 of one answer; "list": of a list
    of answers; "status": only 200 and a JSON object (the no-op handler's constant answer)."""
    labels = get_spec(model).labels

    def check(status: int, body: bytes, expected) -> str | None:
        if status != 200:
            return f"HTTP {status}"
        try:
            answer = json.loads(body)
        except ValueError:
            return "contract: not JSON"
        if kind == "status":
            return None if isinstance(answer, dict) else "contract: not an object"
        try:
            if kind == "list":
                top, expected = contract.check_predictions(answer, labels, len(expected), model), list(expected)
            else:
                top = contract.check_prediction(answer, labels, model)
        except contract.ContractError as err:
            return f"contract: {err.part}"
        return None if top == expected else "top-1 differs from the model"
    return check


@dataclass
class Workload:
    """One model's held-out images as sent, as the model sees them, and what the model answers."""
    model: str
    pngs: tuple[bytes, ...]
    canonical: np.ndarray        # [N, H, W] uint8, what the handler feeds the model
    model_labels: list[str]      # the exported model's own top-1 for each image
    true_labels: tuple[str, ...]
    scripted: object             # the exported TorchScript model

    @classmethod
    def load(cls, model: str, limit: int | None, threads: int) -> "Workload":
        """The first `limit` held-out images (all: None); `threads` torch threads for row 1."""
        import torch
        torch.set_num_threads(threads)
        spec = get_spec(model)
        data = held_out(model, limit)
        raw = [np.asarray(Image.open(io.BytesIO(p))) for p in data.pngs]  # exactly what is sent
        canonical = np.stack([canonicalize(img, spec.preprocessing, spec.input_size) for img in raw])
        scripted = artifacts.scripted_model(model)
        with torch.inference_mode():
            probabilities = scripted(torch.from_numpy(canonical).unsqueeze(1)).numpy()
        labels = [spec.labels[i] for i in probabilities.argmax(axis=1)]
        return cls(model, data.pngs, canonical, labels, data.labels, scripted)

    def single_requests(self, host: str, port: int) -> list[client.WireRequest]:
        """One PNG per request (raw body), each expecting the model's own top-1."""
        path = f"/predictions/{self.model}"
        return [client.build_request(host, port, path, png, "image/png", label)
                for png, label in zip(self.pngs, self.model_labels)]

    def multi_requests(self, host: str, port: int, per_request: int, count: int = 32) -> list[client.WireRequest]:
        """`count` requests of `per_request` held-out digits each as one NumPy .npy body (uint8
        [N, H, W], the pixels the PNGs hold: what a client that holds tensors sends), expecting a list
        of top-1s."""
        path = f"/predictions/{self.model}"
        pixels = np.stack([np.asarray(Image.open(io.BytesIO(p)).convert("L")) for p in self.pngs])
        n = len(pixels)
        requests = []
        for r in range(count):
            picks = [(r * per_request + i) % n for i in range(per_request)]
            body = io.BytesIO()
            np.save(body, pixels[picks], allow_pickle=False)
            requests.append(client.build_request(host, port, path, body.getvalue(), "application/x-npy",
                                                 [self.model_labels[i] for i in picks], per_request))
        return requests


@dataclass(frozen=True)
class Photos:
    """Held-out digits as 640x480 JPEG phone photos (export/photos.py), and what the model answers."""
    model: str
    seed: int
    jpegs: tuple[bytes, ...]
    model_labels: tuple[str, ...]  # the exported model's own top-1 for each photo, decoded as the handler does

    @classmethod
    def render(cls, work: Workload, count: int, seed: int = PHOTO_SEED) -> "Photos":
        """`count` photos of held-out digits spread evenly over the held-out set."""
        import torch
        spec = get_spec(work.model)
        _, digits, _ = load_held_out(spec, artifacts.manifest(work.model))
        picks = np.linspace(0, len(digits) - 1, num=min(count, len(digits))).round().astype(int)
        jpegs = tuple(render_photo(digits[i], photo_rng(seed, int(i))) for i in picks)
        canonical = np.stack([canonicalize(open_image(j, LIMITS), spec.preprocessing, spec.input_size)
                              for j in jpegs])
        with torch.inference_mode():
            probabilities = work.scripted(torch.from_numpy(canonical).unsqueeze(1)).numpy()
        return cls(work.model, seed, jpegs, tuple(spec.labels[i] for i in probabilities.argmax(axis=1)))

    def summary(self) -> dict:
        """What bench.json and the report say of them."""
        return {"count": len(self.jpegs), "seed": self.seed, "width": WIDTH, "height": HEIGHT,
                "mean_bytes": round(sum(map(len, self.jpegs)) / len(self.jpegs))}

    def requests(self, host: str, port: int) -> list[client.WireRequest]:
        """One JPEG per request (raw body, image/jpeg), each expecting the model's own top-1."""
        path = f"/predictions/{self.model}"
        return [client.build_request(host, port, path, jpeg, "image/jpeg", label)
                for jpeg, label in zip(self.jpegs, self.model_labels)]
