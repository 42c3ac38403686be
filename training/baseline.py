"""Learning-free and linear yardsticks on downsampled pixels: 1-nearest-neighbour and a ridge classifier.

If one of these scores as well as the network on a split, the network has learnt nothing the pixels
did not already give away (on a random split, matching near-duplicates; on a grouped one, acquisition
look). Every training run fits both on the same split as the network, the report prints them beside
it, and `models promote` refuses a candidate that does not beat them by more than the uncertainty.
Both work on standardised thumbnails (zero mean, unit norm per image), so a global brightness or
contrast change of a whole scan does not decide the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

THUMB = 32
RIDGE_ALPHA = (
    1.0  # measured on the real sample's latest-IDs block: 0.1 -> 0.37, 1 -> 0.47, 10 -> 0.33 macro-F1
)
BASELINES: tuple[str, ...] = ("nearest_neighbour", "ridge")


def thumbnails(images: np.ndarray, size: int = THUMB) -> np.ndarray:
    """[N, S, S, 1] in [0, 255] -> [N, size*size] standardised rows (zero mean, unit norm)."""
    rows = np.stack(
        [
            np.asarray(Image.fromarray(img[..., 0], mode="F").resize((size, size), Image.Resampling.BILINEAR))
            for img in images.astype(np.float32)
        ]
    ).reshape(len(images), -1)
    rows = rows - rows.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)


def nearest_neighbour_predict(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray) -> np.ndarray:
    """The label of each test image's most correlated training image."""
    if len(train) == 0:
        raise ValueError("no training images")
    similarity = thumbnails(test) @ thumbnails(train).T
    return np.asarray(train_labels)[similarity.argmax(axis=1)]


@dataclass(frozen=True)
class RidgeClassifier:
    """One-vs-rest ridge regression onto +-1 targets with balanced class weights, in closed form."""

    mean: np.ndarray
    weights: np.ndarray  # [features, classes]
    bias: np.ndarray  # [classes]

    @classmethod
    def fit(
        cls, features: np.ndarray, labels: np.ndarray, num_classes: int, alpha: float = RIDGE_ALPHA
    ) -> RidgeClassifier:
        if len(features) == 0:
            raise ValueError("no training images")
        labels = np.asarray(labels, dtype=np.int64)
        counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
        present = max(1, int((counts > 0).sum()))
        sample_weight = (len(labels) / (present * np.maximum(counts, 1.0)))[labels]
        mean = features.mean(axis=0)
        centred = (features - mean).astype(np.float64)
        targets = np.eye(num_classes)[labels] * 2.0 - 1.0
        gram = centred.T @ (centred * sample_weight[:, None]) + alpha * np.eye(centred.shape[1])
        weights = np.linalg.solve(gram, centred.T @ (targets * sample_weight[:, None]))
        bias = (targets * sample_weight[:, None]).sum(axis=0) / sample_weight.sum()
        return cls(mean=mean, weights=weights, bias=bias)

    def scores(self, features: np.ndarray) -> np.ndarray:
        return (features - self.mean) @ self.weights + self.bias


def ridge_predict(
    train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, num_classes: int
) -> np.ndarray:
    """Class scores turned into probabilities (softmax) of a ridge classifier on 32x32 thumbnails."""
    model = RidgeClassifier.fit(thumbnails(train), np.asarray(train_labels), num_classes)
    scores = model.scores(thumbnails(test))
    scores = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(scores * 4.0)  # the +-1 targets give scores of order 1; sharpen so argmax and AUC hold
    return exp / exp.sum(axis=1, keepdims=True)


def baseline_probabilities(
    train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, num_classes: int
) -> dict[str, np.ndarray]:
    """Each baseline's [N, classes] probabilities on `test` (1-NN: one-hot)."""
    nn = nearest_neighbour_predict(train, train_labels, test)
    return {
        "nearest_neighbour": np.eye(num_classes)[nn],
        "ridge": ridge_predict(train, train_labels, test, num_classes),
    }
