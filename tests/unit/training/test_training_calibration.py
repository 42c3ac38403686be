"""Calibration (ECE, reliability bins) and normal-vs-abnormal sensitivity/specificity (`training.evaluate`)."""

from __future__ import annotations

import numpy as np

from training.evaluate import calibration, normal_vs_abnormal

CLASSES = ["Cyst", "Normal", "Stone", "Tumor"]


def test_ece_is_zero_when_confidence_matches_accuracy_and_large_when_confidently_wrong() -> None:
    # Top probability 0.6 everywhere, right 6 times out of 10: perfectly calibrated.
    truth = np.array([0] * 6 + [1] * 4)
    probs = np.tile([0.6, 0.4, 0.0, 0.0], (10, 1))
    result = calibration(truth, probs)
    assert abs(result["ece"]) < 1e-9 and sum(b["count"] for b in result["bins"]) == 10
    confident_wrong = calibration(np.zeros(4, int), np.tile([0.0, 0.99, 0.01, 0.0], (4, 1)))
    assert confident_wrong["ece"] > 0.98 and confident_wrong["mean_confidence"] == 0.99


def test_sensitivity_counts_any_abnormal_call_for_an_abnormal_slice() -> None:
    """A Stone called Tumor is still a detected abnormality; a Normal called Cyst is a false alarm."""
    truth = np.array([2, 2, 0, 1, 1, 1])  # Stone, Stone, Cyst, Normal x3
    pred = np.array([3, 1, 0, 1, 0, 1])
    result = normal_vs_abnormal(truth, np.eye(4)[pred], CLASSES)
    assert result == {"sensitivity": 2 / 3, "specificity": 2 / 3, "abnormal": 3, "normal": 3}
    assert normal_vs_abnormal(truth, np.eye(4)[pred], ["a", "b", "c", "d"]) is None
