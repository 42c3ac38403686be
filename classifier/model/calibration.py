"""Temperature scaling of the served probabilities (numpy only: any Keras backend).

The network ends in a softmax, so its log-probabilities are its logits up to a constant per image;
dividing them by a temperature T and taking the softmax again gives what the logits / T would. T > 1
softens an over-confident model. T is fitted on validation scans after training (`training.calibrate`)
and stored in the model card; the serving model applies it, so every probability written to SQL,
the SR and the study decision is the calibrated one.
"""

from __future__ import annotations

import numpy as np

EPSILON = 1e-12


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(p) / T) row-wise; T == 1 returns the probabilities as they are."""
    p = np.asarray(probabilities, dtype=np.float64)
    if temperature == 1.0 or p.size == 0:
        return p
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    logits = np.log(np.clip(p, EPSILON, 1.0)) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=-1, keepdims=True)
