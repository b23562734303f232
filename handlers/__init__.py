"""TorchServe handler for the image classifiers, and the request decoding it relies on.

Stages, in the order a request meets them:
  request_decoding.py  HTTP payload (raw body, multipart, JSON; .npy via npy_decoding.py) -> image sources
  image_decoding.py    image bytes -> PIL image, with size limits checked before decoding
  image_structure.py   files whose framing would cost seconds to decode, refused before decoding
  model_defs/preprocessing.py  PIL image -> canonical uint8 H x W (shared with training)
  classifier_handler.py  batch -> one forward pass -> per-request JSON (or per-request 4xx)
Beside them: contract.py (what an answer is), errors.py (InputError), saliency.py (explanations),
png.py (arrays -> PNG), digest.py (sha256 of a file), worker_logging.py (TorchServe's per-batch log
lines dropped); the limits are settings/limits.py's InputLimits.
"""
