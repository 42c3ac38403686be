"""Shift detection: how unlike the training images a slice is, from the network's penultimate features.

The score is the class-conditional Mahalanobis distance (Lee et al., NeurIPS 2018) with one shared,
shrunk covariance: min over classes of (f - mu_c)^T P (f - mu_c), on the 512 features of the head's
`dense_512` layer. The statistics are fitted on the served model's training images at the end of
training and saved beside the weights (`SHIFT_FILE`); the threshold (in the card) comes from held-out
validation scans. numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHIFT_FILE = "shift_stats.npz"
FEATURE_LAYER = "dense_512"
SHRINKAGE = 0.1  # covariance -> (1 - s) * covariance + s * mean variance * I: invertible with few images


@dataclass(frozen=True)
class ShiftStats:
    means: np.ndarray  # [classes, features]
    precision: np.ndarray  # [features, features]

    def scores(self, features: np.ndarray) -> np.ndarray:
        """[N] the squared Mahalanobis distance to the nearest class mean."""
        f = np.asarray(features, dtype=np.float64)
        if len(f) == 0:
            return np.zeros(0)
        out = np.full(len(f), np.inf)
        for mu in self.means:
            d = f - mu
            out = np.minimum(out, np.einsum("ij,jk,ik->i", d, self.precision, d))
        return out

    def save(self, path: Path) -> None:
        np.savez(path, means=self.means.astype(np.float32), precision=self.precision.astype(np.float32))

    @classmethod
    def load(cls, path: Path) -> ShiftStats:
        with np.load(path) as data:
            return cls(
                means=np.asarray(data["means"], np.float64),
                precision=np.asarray(data["precision"], np.float64),
            )


def fit_shift_stats(features: np.ndarray, labels: np.ndarray, num_classes: int) -> ShiftStats:
    """Class means and the shrunk shared precision of the training features (absent classes: no mean)."""
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    means = np.stack([f[y == c].mean(axis=0) for c in range(num_classes) if (y == c).any()])
    present = [c for c in range(num_classes) if (y == c).any()]
    centred = f - means[np.searchsorted(present, y)]
    cov = centred.T @ centred / max(len(f) - 1, 1)
    scale = float(np.trace(cov)) / len(cov) or 1.0
    shrunk = (1.0 - SHRINKAGE) * cov + SHRINKAGE * scale * np.eye(len(cov))
    return ShiftStats(means=means, precision=np.linalg.pinv(shrunk, hermitian=True))
