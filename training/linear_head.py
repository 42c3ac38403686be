"""A deterministic classification head on fixed features: multinomial logistic regression with L2.

Standardised features (training mean and standard deviation), optional class-balanced sample
weights, fitted full-batch from zero by Nesterov-accelerated gradient descent with the step 1/L (L
the loss's Lipschitz constant bound): no random initialisation, no data order, so the same features
and labels give the same weights bit for bit. numpy only (float64).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_STEPS = 500
POWER_ITERATIONS = 50


@dataclass(frozen=True)
class LinearHead:
    mean: np.ndarray  # [features]
    scale: np.ndarray  # [features]
    weights: np.ndarray  # [features, classes], on standardised features
    bias: np.ndarray  # [classes]

    def logits(self, features: np.ndarray) -> np.ndarray:
        return self.standardise(features) @ self.weights + self.bias

    def standardise(self, features: np.ndarray) -> np.ndarray:
        return (np.asarray(features, dtype=np.float64) - self.mean) / self.scale

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return softmax(self.logits(features))

    def raw_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(kernel, bias) of the same logits on the raw features: standardisation folded in."""
        kernel = self.weights / self.scale[:, None]
        return kernel, self.bias - self.mean @ kernel


def softmax(scores: np.ndarray) -> np.ndarray:
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def sample_weights(labels: np.ndarray, num_classes: int, *, balanced: bool) -> np.ndarray:
    """Per-sample weights summing to 1: n / (k * n_c) per class when `balanced`, uniform otherwise."""
    labels = np.asarray(labels, dtype=np.int64)
    if not balanced:
        return np.full(len(labels), 1.0 / len(labels))
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    present = max(1, int((counts > 0).sum()))
    weights = (len(labels) / (present * np.maximum(counts, 1.0)))[labels]
    return weights / weights.sum()


def _largest_eigenvalue(z: np.ndarray, w: np.ndarray) -> float:
    """Largest eigenvalue of Z^T diag(w) Z by power iteration from a fixed start (deterministic)."""
    v = np.ones(z.shape[1]) / np.sqrt(z.shape[1])
    value = 0.0
    for _ in range(POWER_ITERATIONS):
        u = z.T @ (w * (z @ v))
        value = float(np.linalg.norm(u))
        if value == 0.0:
            return 0.0
        v = u / value
    return value


def fit_linear_head(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    l2: float,
    balanced: bool = True,
    label_smoothing: float = 0.0,
    steps: int = DEFAULT_STEPS,
) -> LinearHead:
    """Minimise the weighted cross-entropy + l2/2 |W|^2 over standardised features (bias unpenalised)."""
    if len(features) == 0:
        raise ValueError("no training features")
    x = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    z = (x - mean) / scale
    w = sample_weights(labels, num_classes, balanced=balanced)
    target = np.eye(num_classes)[labels] * (1.0 - label_smoothing) + label_smoothing / num_classes
    # Softmax cross-entropy's Hessian in the logits is at most 1/2; the bias adds a column of ones.
    lipschitz = 0.5 * (_largest_eigenvalue(z, w) + 1.0) + l2
    step = 1.0 / lipschitz
    weights, bias = np.zeros((z.shape[1], num_classes)), np.zeros(num_classes)
    prev_w, prev_b = weights, bias
    for t in range(1, steps + 1):
        momentum = (t - 1) / (t + 2)
        yw, yb = weights + momentum * (weights - prev_w), bias + momentum * (bias - prev_b)
        error = (softmax(z @ yw + yb) - target) * w[:, None]
        prev_w, prev_b = weights, bias
        weights = yw - step * (z.T @ error + l2 * yw)
        bias = yb - step * error.sum(axis=0)
    return LinearHead(mean=mean, scale=scale, weights=weights, bias=bias)
