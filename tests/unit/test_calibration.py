"""export/calibration.py: the expected calibration error on calibrated, overconfident and edge-case
sets, the bins' edges, and the temperature fit recovering a known temperature."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax, softmax

from export import calibration


def _labels_from(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> np.ndarray:
    """A label per row drawn from softmax(logits / temperature) (the Gumbel-max trick)."""
    return np.argmax(logits / temperature + rng.gumbel(size=logits.shape), axis=1)


def test_top_label_is_the_highest_probability_and_whether_it_is_right():
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.25, 0.5, 0.25]])
    confidence, correct = calibration.top_label(probabilities, np.array([0, 1, 1]))
    np.testing.assert_allclose(confidence, [0.7, 0.6, 0.5])
    assert correct.tolist() == [True, False, True]


def test_calibrated_set_has_an_ece_within_sampling_noise():
    rng = np.random.default_rng(0)
    n, bins = 100_000, 15
    top = rng.uniform(0.5, 1.0, n)          # two classes: the top label's probability
    labels = (rng.random(n) >= top).astype(int)  # label 0 (the top one) with exactly that probability
    probabilities = np.stack([top, 1 - top], axis=1)
    result = calibration.reliability(probabilities, labels, bins)
    filled = result.count > 0
    assert filled.sum() == 8  # [7/15, 8/15) holds 0.5; bins 7..14
    # each bin's accuracy is a mean of n_b Bernoulli draws around its mean confidence: sd <= 0.5 / sqrt(n_b)
    sd = 0.5 / np.sqrt(result.count[filled])
    assert np.all(result.gap[filled] < 5 * sd)
    assert result.ece < np.sum(result.count[filled] / n * 2 * sd)  # calibrated: near 0.8 sd, |normal|'s mean
    assert calibration.expected_calibration_error(probabilities, labels, bins) == result.ece


def test_overconfident_set_matches_the_hand_computed_ece():
    probabilities = np.array([
        [0.95, 0.03, 0.02],  # bin 14 [14/15, 1]: right
        [0.95, 0.03, 0.02],  # bin 14: wrong
        [0.10, 0.85, 0.05],  # bin 12 [12/15, 13/15): right
        [0.10, 0.85, 0.05],  # bin 12: wrong
        [0.10, 0.85, 0.05],  # bin 12: wrong
        [0.30, 0.08, 0.62],  # bin 9 [9/15, 10/15): right
    ])
    labels = np.array([0, 1, 1, 2, 0, 2])
    result = calibration.reliability(probabilities, labels)
    assert result.count.tolist() == [0] * 9 + [1, 0, 0, 3, 0, 2]
    np.testing.assert_allclose(result.accuracy[[9, 12, 14]], [1.0, 1 / 3, 0.5])
    np.testing.assert_allclose(result.confidence[[9, 12, 14]], [0.62, 0.85, 0.95])
    assert np.isnan(result.confidence[0]) and np.isnan(result.accuracy[0])
    # (1 * |1 - 0.62| + 3 * |1/3 - 0.85| + 2 * |0.5 - 0.95|) / 6 = (0.38 + 1.55 + 0.9) / 6
    assert result.ece == pytest.approx(2.83 / 6)
    assert result.mce == pytest.approx(0.85 - 1 / 3)


def test_all_answers_in_one_bin_give_the_gap_of_accuracy_and_mean_confidence():
    confidence = np.array([0.97, 0.98, 0.99, 0.975])
    correct = np.array([True, False, True, True])
    result = calibration.binned_reliability(confidence, correct)
    assert result.count[-1] == 4 and result.total == 4
    assert result.ece == pytest.approx(confidence.mean() - 0.75)
    one_bin = calibration.binned_reliability([0.2, 0.6, 0.9], [False, True, True], bins=1)
    assert one_bin.count.tolist() == [3] and one_bin.ece == pytest.approx(abs(2 / 3 - 1.7 / 3))


def test_confidence_of_exactly_one_lands_in_the_last_bin_and_zero_in_the_first():
    result = calibration.reliability(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 0]))
    assert result.count[-1] == 2 and result.total == 2
    assert result.ece == pytest.approx(0.5)
    edges = calibration.binned_reliability([0.0, 1 / 3, 1.0], [True, True, True], bins=3)
    assert edges.count.tolist() == [1, 1, 1]


def test_no_answers_give_nan_and_bad_confidences_are_refused():
    assert np.isnan(calibration.binned_reliability([], []).ece)
    with pytest.raises(ValueError):
        calibration.binned_reliability([1.2], [True])
    with pytest.raises(ValueError):
        calibration.binned_reliability([np.nan], [True])


@pytest.mark.parametrize("true_temperature", [2.0, 0.5])
def test_fit_temperature_recovers_the_temperature_labels_were_drawn_at(true_temperature):
    rng = np.random.default_rng(1)
    logits = rng.normal(0.0, 3.0, (20_000, 10))
    labels = _labels_from(logits, true_temperature, rng)
    assert calibration.fit_temperature(logits, labels) == pytest.approx(true_temperature, rel=0.05)


def test_fit_temperature_is_the_same_for_logits_and_their_log_softmax():
    rng = np.random.default_rng(2)
    logits = rng.normal(0.0, 2.0, (2_000, 5)) + rng.normal(0.0, 10.0, (2_000, 1))  # rows shifted apart
    labels = _labels_from(logits, 1.5, rng)
    from_logits = calibration.fit_temperature(logits, labels)
    assert calibration.fit_temperature(log_softmax(logits, axis=1), labels) == pytest.approx(from_logits, rel=1e-4)


def test_fit_temperature_takes_a_torch_tensor():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    logits = rng.normal(0.0, 2.0, (500, 4))
    labels = _labels_from(logits, 1.0, rng)
    assert calibration.fit_temperature(torch.from_numpy(logits).float(), torch.from_numpy(labels)) == \
        pytest.approx(calibration.fit_temperature(logits, labels), rel=1e-4)


def test_temperature_one_leaves_probabilities_unchanged_and_larger_ones_soften():
    rng = np.random.default_rng(4)
    probabilities = softmax(rng.normal(0.0, 2.0, (50, 10)), axis=1)
    np.testing.assert_allclose(calibration.apply_temperature(np.log(probabilities), 1.0), probabilities, rtol=1e-12)
    softer = calibration.apply_temperature(np.log(probabilities), 3.0)
    np.testing.assert_allclose(softer.sum(axis=1), 1.0)
    assert np.all(softer.max(axis=1) < probabilities.max(axis=1))
    with pytest.raises(ValueError):
        calibration.apply_temperature(probabilities, 0.0)
