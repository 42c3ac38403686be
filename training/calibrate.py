"""Temperature scaling fitted on validation scans: the T that minimises the negative log-likelihood.

One parameter, so it cannot over-fit a small validation set the way a histogram or isotonic
calibrator would, and it never changes which class is on top (accuracy and macro-F1 stay as they
are). The search is a golden-section search over log T (the NLL is convex in 1/T), numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from classifier.model.calibration import EPSILON, apply_temperature

LOG_T_RANGE = (np.log(0.05), np.log(20.0))
ITERATIONS = 60


def negative_log_likelihood(probabilities: np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """Mean -log p(true class)."""
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probabilities, dtype=np.float64)
    return float(-np.log(np.clip(p[np.arange(len(y)), y], EPSILON, 1.0)).mean())


def fit_temperature(probabilities: np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """The temperature in [0.05, 20] minimising the validation NLL; 1.0 without validation images."""
    y = np.asarray(labels, dtype=np.int64)
    if len(y) == 0:
        return 1.0

    def nll(log_t: float) -> float:
        return negative_log_likelihood(apply_temperature(probabilities, float(np.exp(log_t))), y)

    low, high = LOG_T_RANGE
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = nll(a), nll(b)
    for _ in range(ITERATIONS):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = nll(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = nll(b)
    return float(np.exp((low + high) / 2.0))
