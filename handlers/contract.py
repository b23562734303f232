"""The answer contract of /predictions/ and /explanations/, written once: the handler encodes its
answers with the functions here and every checker (tests, bench, Locust, soak, evaluation) checks
them with the functions here. Standard library only.

A prediction answer, one JSON object per image (a JSON list of them, in request order, when the
request sent a list of images):
    {"model": "<name>", "label": "<top-1 label>", "index": <its position in the labels>,
     "probabilities": {"<label>": <softmax probability>, ... every label, in the model's order}}
The probabilities lie in [0, 1] and sum to 1 (within PROBABILITY_SUM_TOLERANCE); "label" is the
first label of highest probability.

An explanation answer is the prediction answer plus
    "saliency": H rows of W numbers (4 significant digits; positive pushed toward the label),
    "saliency_png": base64 RGB PNG (H x W), "canonical_png": base64 grey PNG (H x W).

An error answer, for the client's mistakes (4xx) and for ours (500):
    {"error": "<stable code, e.g. not_an_image>", "message": "<what was wrong and what to do>"}
"""
from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Sequence

PREDICTION_FIELDS = frozenset({"model", "label", "index", "probabilities"})
EXPLANATION_FIELDS = PREDICTION_FIELDS | {"saliency", "saliency_png", "canonical_png"}
ERROR_FIELDS = frozenset({"error", "message"})
PROBABILITY_SUM_TOLERANCE = 1e-4  # float32 softmax over ten classes sums to 1 within ~1e-6
SALIENCY_DIGITS = 4               # significant digits of each saliency value
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ContractError(ValueError):
    """An answer that breaks the contract: `part` names what (short, stable), the message says how."""

    def __init__(self, part: str, detail: str, answer: object):
        super().__init__(f"answer breaks the contract (handlers/contract.py), {part}: {detail}; "
                         f"got {str(answer)[:200]}")
        self.part = part


# ---- encode (the handler) ----------------------------------------------------------------------
def prediction(model: str, labels: Sequence[str], probabilities: Sequence[float]) -> dict:
    """One image's answer from its probabilities [classes], in the labels' order."""
    values = [float(p) for p in probabilities]
    index = max(range(len(values)), key=values.__getitem__)  # the first of the highest
    return {"model": model, "label": labels[index], "index": index, "probabilities": dict(zip(labels, values))}


def explanation(answer: dict, saliency: Sequence[Sequence[float]], saliency_png: str, canonical_png: str) -> dict:
    """The prediction answer plus its saliency [H][W] (rounded) and the two base64 PNGs."""
    rounded = [[float(f"{v:.{SALIENCY_DIGITS}g}") for v in row] for row in saliency]
    return {**answer, "saliency": rounded, "saliency_png": saliency_png, "canonical_png": canonical_png}


def error(code: str, message: str) -> dict:
    """The JSON body of a 4xx or 500 answer."""
    return {"error": code, "message": message}


# ---- check (every checker) ---------------------------------------------------------------------
def check_prediction(answer: object, labels: Sequence[str], model: str | None = None) -> str:
    """A prediction answer that keeps the contract -> its top-1 label; else ContractError."""
    if not isinstance(answer, dict) or answer.keys() != PREDICTION_FIELDS:
        raise ContractError("fields", f"expected an object with exactly {sorted(PREDICTION_FIELDS)}", answer)
    _check_prediction_values(answer, labels, model)
    return answer["label"]


def check_predictions(answer: object, labels: Sequence[str], count: int, model: str | None = None) -> list[str]:
    """The answer to a request of `count` images (a list) -> their top-1 labels; else ContractError."""
    if not isinstance(answer, list) or len(answer) != count:
        raise ContractError("list length", f"expected a list of {count} answers, one per image", answer)
    return [check_prediction(item, labels, model) for item in answer]


def check_explanation(answer: object, labels: Sequence[str], size: tuple[int, int] | None = None,
                      model: str | None = None) -> str:
    """An explanation answer (size: the model's input H, W) -> its top-1 label; else ContractError."""
    if not isinstance(answer, dict) or answer.keys() != EXPLANATION_FIELDS:
        raise ContractError("fields", f"expected an object with exactly {sorted(EXPLANATION_FIELDS)}", answer)
    _check_prediction_values(answer, labels, model)
    saliency = answer["saliency"]
    if (not isinstance(saliency, list) or not saliency or not all(isinstance(row, list) for row in saliency)
            or len({len(row) for row in saliency}) != 1
            or not all(_is_number(v) and math.isfinite(v) for row in saliency for v in row)):
        raise ContractError("saliency", "expected H rows of W finite numbers", answer)
    if size is not None and (len(saliency), len(saliency[0])) != tuple(size):
        raise ContractError("saliency", f"expected {size[0]} x {size[1]}, the model's input size, got "
                            f"{len(saliency)} x {len(saliency[0])}", answer)
    for key in ("saliency_png", "canonical_png"):
        if not _is_base64_png(answer[key]):
            raise ContractError(key, "expected a base64 PNG", answer)
    return answer["label"]


def check_error(body: object, status: int | None = None) -> str:
    """An error answer (and its HTTP status, 4xx or 5xx) -> its code; else ContractError."""
    if status is not None and not 400 <= status <= 599:
        raise ContractError("status", f"HTTP {status} is not an error status", body)
    if not isinstance(body, dict) or body.keys() != ERROR_FIELDS:
        raise ContractError("fields", f"expected an object with exactly {sorted(ERROR_FIELDS)}", body)
    if not all(isinstance(body[key], str) and body[key] for key in ERROR_FIELDS):
        raise ContractError("error", "expected a non-empty code and message", body)
    return body["error"]


def _check_prediction_values(answer: dict, labels: Sequence[str], model: str | None) -> None:
    if model is not None and answer["model"] != model:
        raise ContractError("model name", f"expected {model!r}", answer)
    probabilities = answer["probabilities"]
    if not isinstance(probabilities, dict) or list(probabilities) != list(labels):
        raise ContractError("labels", f"expected probabilities for {list(labels)}, in that order", answer)
    values = list(probabilities.values())
    try:
        highest = max(values)
        valid = 0.0 <= min(values) and highest <= 1.0 and abs(sum(values) - 1.0) <= PROBABILITY_SUM_TOLERANCE
    except (TypeError, ValueError):  # not numbers, or none
        valid = False
    if not valid:  # NaN fails the comparisons above too
        raise ContractError("probabilities", f"expected numbers in [0, 1] summing to 1 (within "
                            f"{PROBABILITY_SUM_TOLERANCE:g})", answer)
    index = answer["index"]
    if type(index) is not int or not 0 <= index < len(labels) or labels[index] != answer["label"]:
        raise ContractError("index", "expected the position of the label in the labels", answer)
    if probabilities[answer["label"]] != highest:
        raise ContractError("label", "expected the label of highest probability", answer)


def _is_number(value: object) -> bool:
    return type(value) in (int, float)


def _is_base64_png(text: object) -> bool:
    if not isinstance(text, str):
        return False
    try:
        return base64.b64decode(text[:12], validate=True).startswith(PNG_SIGNATURE)
    except (binascii.Error, ValueError):
        return False
