"""The TorchServe handler shared by every image classifier here, configured by its archive.

Each archive carries model_meta.json (the export manifest: name, input size, labels,
preprocessing, sha256 of model.pt) and a model-config.yaml whose `handler:` section holds the
input limits and torch threads (from settings/ports.py). The stages of `handle`:

  decode       each request -> images (request_decoding, image_decoding, canonicalize): every
               request's headers first, then each request's pixels into the batch's
               CanonicalStack, which frames the small digit pictures of all its requests at once
               (model_defs/canonical_batch.py); a bad request gets its own 4xx and leaves the batch
  batch        the good requests' canonical images -> one uint8 tensor [N, 1, H, W]
  predict      one forward pass of the TorchScript model (softmax baked in) on the worker's device
  unbatch      probabilities back to the request that sent each image
  encode       compact JSON per request: {"model", "label", "index", "probabilities"}, the
               answer contract of handlers/contract.py (errors: {"error", "message"})

POST /explanations/<model> reaches `handle` too (TorchServe sets the request header
`explain: True`, per request, and may batch explanations with predictions): the same decoding and
errors, at most `max_images_per_explanation` images, and each answer gains "saliency",
"saliency_png" and "canonical_png" (handlers/saliency.py), one backward pass for the batch's
explanations.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from http import HTTPStatus

import numpy as np
import torch
from ts.torch_handler.base_handler import BaseHandler

from handlers import contract
from handlers.digest import sha256_of
from handlers.errors import InputError
from handlers.image_decoding import check_request_pixels, check_size, load_pixels, open_header
from handlers.request_decoding import ImageSource, PendingRequest, request_header, request_to_sources
from handlers.saliency import canonical_png, gradient_x_input, heatmap_png
from handlers.worker_logging import failure_text, log_client_mistake, quiet_per_batch_lines, request_label
from model_defs.canonical_batch import CanonicalStack
from settings.limits import InputLimits

logger = logging.getLogger(__name__)

METADATA_FILE = "model_meta.json"
JSON_CONTENT_TYPE = "application/json"


# TorchServe loads this module and refuses it unless it defines exactly one class: the handler.
class ImageClassifierHandler(BaseHandler):
    """Decode, batch, predict, unbatch, encode: one forward pass per TorchServe batch."""

    def __init__(self):
        super().__init__()
        self.metadata: dict = {}
        self.labels: list[str] = []
        self.input_size: tuple[int, int] = (0, 0)
        self.limits = InputLimits()
        self.batch_model = None

    # ---- start-up ---------------------------------------------------------------------------
    def initialize(self, context):
        model_dir = context.system_properties.get("model_dir")
        meta_path = os.path.join(model_dir, METADATA_FILE)
        if not os.path.isfile(meta_path):
            raise RuntimeError(f"{METADATA_FILE} is missing from the archive; rebuild it with `make archive`")
        with open(meta_path) as f:
            self.metadata = json.load(f)
        serialized = os.path.join(model_dir, context.manifest["model"]["serializedFile"])
        if sha256_of(serialized) != self.metadata["sha256"]:
            raise RuntimeError(f"{serialized} does not match the sha256 in {METADATA_FILE}; "
                               "the archive is inconsistent, rebuild it with `make archive`")
        self.labels = list(self.metadata["labels"])
        self.input_size = tuple(self.metadata["input_size"])

        settings = (getattr(context, "model_yaml_config", None) or {}).get("handler", {}) or {}
        known = {f.name for f in dataclasses.fields(InputLimits)}
        self.limits = InputLimits(**{k: v for k, v in settings.items() if k in known})
        threads = int(settings.get("torch_threads", 0) or 0)
        if threads > 0:
            torch.set_num_threads(threads)

        super().initialize(context)  # torch.jit.load onto the GPU TorchServe assigned, else CPU
        self.use_device(self.device)
        self.batch_model = batch_model(self.model, self.device)
        self._warm_up()
        quiet_per_batch_lines()  # TorchServe's two lines per batch: handlers/worker_logging.py
        logger.info("%s ready on %s: input %s, %d labels, %d torch threads", self.metadata["name"],
                    self.device, self.input_size, len(self.labels), torch.get_num_threads())

    def use_device(self, device) -> None:
        """Predict on `device` (the model must be there). On CUDA, TF32 off for this worker: TF32
        convolutions move the probabilities visibly away from the CPU's (BENCHMARKS-GPU.md), and a
        model this small gains nothing from them. On the CPU, oneDNN off for this worker's plain
        model (the optimised copy calls it directly)."""
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        else:  # the plain model's small batches: ATen's own convolutions (see BATCH_MODEL_FROM)
            torch.backends.mkldnn.enabled = False

    def _warm_up(self) -> None:
        """Run the TorchScript profiling passes now, not on the first client's request."""
        for batch in (1, 2, 1, BATCH_MODEL_FROM, 16):
            self.predict(np.zeros((batch, *self.input_size), dtype=np.uint8))
        for batch in (1, 2, 1):  # the gradient passes are profiled separately
            self.saliency(np.zeros((batch, *self.input_size), dtype=np.uint8), np.zeros(batch, dtype=np.int64))

    # ---- stages -----------------------------------------------------------------------------
    # decode, in three steps that `handle` runs one at a time across its batch's requests: every
    # request's headers first (their code stays warm), then each request's pixels into the batch's
    # CanonicalStack, which canonicalises a large picture as it comes (one request's full-size
    # pixels in memory at a time) and keeps a small digit picture's grey levels, then the stack
    # frames those all at once.
    def open_request(self, request: PendingRequest, row: dict, content_type: str | None) -> None:
        """The request's images opened (headers only, limits checked) and whether the client sent a list.

        Every image's header is checked (and the request's total pixels) before any pixels are
        decoded, so an oversized request costs microseconds, not a worker's time."""
        sources, request.is_list = request_to_sources(row, content_type, self.limits)
        if request.explain and len(sources) > self.limits.max_images_per_explanation:
            raise InputError(413, "too_many_images_to_explain", f"{len(sources)} images in one explanation "
                             f"request; the limit is {self.limits.max_images_per_explanation}. Split them over "
                             "several requests, or ask /predictions/ for the answers alone.")
        request.images = [self.open(source) for source in sources]
        total = sum(image.shape[0] * image.shape[1] if isinstance(image, np.ndarray) else
                    image.size[0] * image.size[1] for image in request.images)
        check_request_pixels(total, self.limits)

    def open(self, source: ImageSource):
        """Encoded bytes -> a lazily opened image (header checked); a pixel array -> itself, checked."""
        if isinstance(source, np.ndarray):
            check_size(source.shape[::-1], self.limits, what="The pixel array is")
            return source
        return open_header(source, self.limits)

    def to_stack(self, request: PendingRequest, stack: CanonicalStack) -> None:
        """Its opened images -> pixels (decoded) -> slots in the batch's stack of canonical inputs."""
        request.slots = [stack.add(image if isinstance(image, np.ndarray) else load_pixels(image))
                         for image in request.images]
        request.images = []

    def to_canonical(self, pending: list[PendingRequest], stack: CanonicalStack, responses: list,
                     context) -> list[PendingRequest]:
        """Every request's canonical images, framed together (model_defs/canonical_batch.py). Should
        that fail (a bug of ours), each request's are framed on their own, so that only the requests
        that fail again get a 500."""
        try:
            canonical = stack.images()
        except Exception as err:
            logger.error("framing %d pictures together failed; framing them request by request\n%s",
                         len(stack.pictures), failure_text(err))
            return self._each(pending, responses, context, lambda request: setattr(
                request, "images", [stack.canonical(slot) for slot in request.slots]))
        for request in pending:
            request.images = list(canonical[request.slots])
        return pending

    @torch.inference_mode()
    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W] -> probabilities [N, classes], one forward pass."""
        batch = torch.from_numpy(images).unsqueeze(1).to(self.device)
        model = self.batch_model if self.batch_model is not None and len(images) >= BATCH_MODEL_FROM else self.model
        return model(batch).float().cpu().numpy()

    def saliency(self, images: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W], answers [N] -> float32 [N, H, W]: one forward and one backward pass."""
        return gradient_x_input(self.model, images, targets, device=self.device)

    def explain_answer(self, answer: dict, image: np.ndarray, saliency: np.ndarray) -> dict:
        """A prediction answer + the saliency of its canonical image [H, W] -> the explanation answer."""
        return contract.explanation(answer, saliency.tolist(), heatmap_png(image, saliency), canonical_png(image))

    def encode(self, probabilities: np.ndarray) -> dict:
        """probabilities [classes] -> the prediction answer (handlers/contract.py)."""
        return contract.prediction(self.metadata["name"], self.labels, probabilities.tolist())

    # ---- TorchServe entry point -------------------------------------------------------------
    def handle(self, data, context):
        responses: list = [None] * len(data)
        pending = [PendingRequest(idx, _is_explanation(context, idx)) for idx in range(len(data))]
        pending = self._each(pending, responses, context, lambda request: self.open_request(
            request, data[request.idx], request_header(context, request.idx, "Content-Type")))
        stack = CanonicalStack(self.metadata["preprocessing"], self.input_size)
        pending = self._each(pending, responses, context, lambda request: self.to_stack(request, stack))
        pending = self.to_canonical(pending, stack, responses, context)

        if pending:
            batch = np.stack([image for request in pending for image in request.images])
            probabilities = self.predict(batch)
            wanted = np.concatenate([np.full(len(request.images), request.explain) for request in pending])
            try:  # a failure here (a bug of ours) costs the explanations, not the predictions
                saliency = iter(self.saliency(batch[wanted], probabilities[wanted].argmax(1)) if wanted.any() else [])
            except Exception as err:
                logger.error("saliency failed for %d images\n%s", int(wanted.sum()), failure_text(err))
                saliency = None
            offset = 0
            for request in pending:
                idx, images = request.idx, request.images
                results = [self.encode(p) for p in probabilities[offset : offset + len(images)]]
                offset += len(images)
                if request.explain and saliency is None:
                    responses[idx] = self._error(context, idx, 500, contract.error(
                        "internal_error", "The server failed to explain this request; see its log."))
                    continue
                if request.explain:
                    results = [self.explain_answer(result, image, next(saliency))
                               for result, image in zip(results, images)]
                responses[idx] = self._json(context, idx, results if request.is_list else results[0])
        return responses

    def _each(self, pending: list[PendingRequest], responses: list, context, step) -> list[PendingRequest]:
        """step(request) for each pending request, in order; a request whose step raises gets its own
        4xx (InputError) or 500 (a bug of ours) in `responses` and leaves the batch, which carries on.
        The log gets one bounded line for a 4xx, a bounded traceback for a 500 (handlers/worker_logging.py)."""
        kept = []
        for request in pending:
            try:
                step(request)
                kept.append(request)
            except InputError as err:
                log_client_mistake(logger, self._label(context, request.idx), err.status, err.code, err.message)
                responses[request.idx] = self._error(context, request.idx, err.status, err.body())
            except Exception as err:
                logger.error("unexpected error decoding %s\n%s", self._label(context, request.idx), failure_text(err))
                responses[request.idx] = self._error(context, request.idx, 500, contract.error(
                    "internal_error", "The server failed on this request; see its log."))
        return kept

    @staticmethod
    def _label(context, idx: int) -> str:
        return request_label(idx, request_header(context, idx, "X-Request-ID"))

    @staticmethod
    def _json(context, idx: int, body) -> bytes:
        context.set_response_content_type(idx, JSON_CONTENT_TYPE)
        return json.dumps(body, separators=(",", ":")).encode("utf-8")

    def _error(self, context, idx: int, status: int, body: dict) -> bytes:
        context.set_response_status(status, HTTPStatus(status).phrase, idx)
        return self._json(context, idx, body)


# On the CPU, batches of this many images or more go through a frozen copy of the model optimised
# for inference (prepacked oneDNN convolutions); smaller ones, and every gradient (saliency), through
# the plain model with oneDNN off (use_device): ATen's own convolutions, faster than either on small
# batches, which PyTorch would otherwise leave for oneDNN's from batch 2 on. Same probabilities
# within float rounding either way.
BATCH_MODEL_FROM = 5


def batch_model(model, device):
    """The model frozen and optimised for inference on the CPU, or None elsewhere (a GPU)."""
    if torch.device(device).type != "cpu":
        return None
    return torch.jit.optimize_for_inference(torch.jit.freeze(model.eval()))


def _is_explanation(context, idx: int) -> bool:
    """TorchServe's /explanations/ API marks its requests with the header `explain: True`."""
    try:
        return context.get_request_header(idx, "explain") == "True"
    except (AttributeError, IndexError, TypeError):
        return False
