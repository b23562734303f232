"""How far a classifier's softmax probabilities are from the frequencies they claim: reliability over
bins of the top label's probability, the expected calibration error (Guo et al. 2017, "On Calibration
of Modern Neural Networks"), and the one-parameter temperature fit of that paper.

    top_label(probabilities, labels) -> (confidence, correct)
    reliability(probabilities, labels, bins=15) -> Reliability (per bin: count, confidence, accuracy; .ece, .mce)
    binned_reliability(confidence, correct, bins=15) -> Reliability, from top-label confidences alone
    expected_calibration_error(probabilities, labels, bins=15) -> float
    fit_temperature(logits, labels) -> T;  apply_temperature(logits, T) -> probabilities
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

ECE_BINS = 15                       # Guo et al.'s bin count, so figures compare with the literature
TEMPERATURE_RANGE = (0.05, 20.0)    # wide enough for any trained classifier; the fit searches log T within it


def _array(values) -> np.ndarray:
    """A numpy float64 array from numpy, a list or a torch tensor (detached, on the CPU)."""
    if hasattr(values, "detach"):  # a torch.Tensor, without importing torch for numpy callers
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def top_label(probabilities, labels) -> tuple[np.ndarray, np.ndarray]:
    """[N, C] probabilities and [N] true labels -> (the top label's probability [N], whether it is right [N])."""
    probabilities = _array(probabilities)
    labels = np.asarray(labels)
    if probabilities.ndim != 2 or labels.shape != probabilities.shape[:1]:
        raise ValueError(f"expected [N, C] probabilities and [N] labels, got {probabilities.shape} and {labels.shape}")
    predicted = probabilities.argmax(axis=1)
    return probabilities[np.arange(len(predicted)), predicted], predicted == labels


@dataclass(frozen=True)
class Reliability:
    """Top-label confidence in equal-width bins over [0, 1]: [lower, upper), the last one [lower, 1]."""
    edges: np.ndarray       # bins + 1 edges, 0 to 1
    count: np.ndarray       # answers per bin
    confidence: np.ndarray  # mean top-label probability per bin, NaN where the bin is empty
    accuracy: np.ndarray    # fraction of right answers per bin, NaN where the bin is empty

    @property
    def total(self) -> int:
        return int(self.count.sum())

    @property
    def gap(self) -> np.ndarray:
        """|accuracy - confidence| per bin, NaN where the bin is empty."""
        return np.abs(self.accuracy - self.confidence)

    @property
    def ece(self) -> float:
        """Expected calibration error: the bins' gaps weighted by their share of the answers (NaN for none)."""
        filled = self.count > 0
        if not filled.any():
            return float("nan")
        return float(np.sum(self.count[filled] / self.total * self.gap[filled]))

    @property
    def mce(self) -> float:
        """Maximum calibration error: the largest gap of a non-empty bin (NaN for none)."""
        filled = self.count > 0
        return float(self.gap[filled].max()) if filled.any() else float("nan")


def binned_reliability(confidence, correct, bins: int = ECE_BINS) -> Reliability:
    """Reliability from each answer's top-label probability [N] and whether it was right [N]."""
    confidence = _array(confidence)
    correct = np.asarray(correct, dtype=bool)
    if confidence.ndim != 1 or correct.shape != confidence.shape:
        raise ValueError(f"expected [N] confidences and [N] booleans, got {confidence.shape} and {correct.shape}")
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    if not np.all((confidence >= 0) & (confidence <= 1)):  # NaN fails this too
        raise ValueError("confidences must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, bins + 1)
    # only the inner edges, so that 1.0 falls in the last bin rather than one past it
    index = np.digitize(confidence, edges[1:-1])
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):  # empty bins: 0 / 0 is the NaN they should hold
        mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / count
        accuracy = np.bincount(index, weights=correct.astype(np.float64), minlength=bins) / count
    return Reliability(edges, count, mean_confidence, accuracy)


def reliability(probabilities, labels, bins: int = ECE_BINS) -> Reliability:
    """Reliability of [N, C] probabilities against [N] true labels, over `bins` bins of the top label's probability."""
    return binned_reliability(*top_label(probabilities, labels), bins=bins)


def expected_calibration_error(probabilities, labels, bins: int = ECE_BINS) -> float:
    """ECE of [N, C] probabilities against [N] true labels (top label, `bins` equal-width bins)."""
    return reliability(probabilities, labels, bins).ece


def _mean_nll(log_probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(log_probabilities[np.arange(len(labels)), labels]))


def fit_temperature(logits, labels) -> float:
    """The T > 0 minimising the mean negative log-likelihood of softmax(logits / T) over [N, C] logits.

    Log-probabilities work as well as logits (a per-row shift changes no softmax), so the log of a
    served model's softmax output can be fitted. Fit on validation data only, never on the set the
    calibration is then measured on. The search is over log T in TEMPERATURE_RANGE.
    """
    logits = _array(logits)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or labels.shape != logits.shape[:1] or not len(labels):
        raise ValueError(f"expected [N, C] logits and [N] labels, N > 0, got {logits.shape} and {labels.shape}")
    if np.isnan(logits).any() or np.isposinf(logits).any():  # -inf is a log-probability of 0, allowed
        raise ValueError("logits must not be NaN or +inf")
    low, high = np.log(TEMPERATURE_RANGE)
    result = minimize_scalar(lambda log_t: _mean_nll(log_softmax(logits / np.exp(log_t), axis=1), labels),
                             bounds=(low, high), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(result.x))


def apply_temperature(logits, temperature: float) -> np.ndarray:
    """softmax(logits / temperature) over the last axis, as numpy float64 probabilities."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return softmax(_array(logits) / temperature, axis=-1)
