"""Learning-free and linear yardsticks: on downsampled pixels 1-nearest-neighbour, a ridge classifier and
logistic regression on principal components; and logistic regression on frozen pretrained
(ImageNet EfficientNet-Lite0) features, where its weights are installed.

If one of these scores as well as the network on a split, the network has learnt nothing the pixels
did not already give away (on a random split, matching near-duplicates; on a grouped one, acquisition
look). Every training run fits both on the same split as the network, the report prints them beside
it, and `models promote` refuses a candidate that does not beat them by more than the uncertainty.
Both work on standardised thumbnails (zero mean, unit norm per image), so a global brightness or
contrast change of a whole scan does not decide the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from training.linear_head import sample_weights, softmax

THUMB = 32
RIDGE_ALPHA = (
    1.0  # measured on the real sample's latest-IDs block: 0.1 -> 0.37, 1 -> 0.47, 10 -> 0.33 macro-F1
)
FROZEN_LITE0 = "logistic_frozen_lite0"
BASELINES: tuple[str, ...] = ("nearest_neighbour", "ridge", "logistic_pca", FROZEN_LITE0)
BASELINE_LABELS = {  # how the report names each (short name before the comma)
    "nearest_neighbour": "1-NN, 32x32 pixels",
    "ridge": "ridge, 32x32 pixels",
    "logistic_pca": "logistic, 32 principal components of 32x32 pixels",
    FROZEN_LITE0: "logistic on frozen Lite0, ImageNet EfficientNet-Lite0 features at 224 px",
}
# Logistic regression on the leading principal components of 32x32 thumbnails: a convex fit (no
# training noise, the same answer for the same data), so it measures what the pixels support.
# Measured on the real sample (fitted on train + val, 4,147 slices): 32 components, L2 0.01 gave
# macro-F1 0.32 on both the grouped test and the latest IDs (1-NN 0.22 / 0.27, ridge 0.29 / 0.24);
# 16 components underfit (0.20-0.28), 128-256 overfit one set or the other (0.17-0.44).
PCA_THUMB = 32
PCA_COMPONENTS = 32
LOGISTIC_L2 = 1e-2
LOGISTIC_STEPS = 300


# Logistic regression on frozen ImageNet EfficientNet-Lite0 features (`training.frozen_recipe`'s head,
# fixed settings, so that every candidate meets the same yardstick): what a pretrained extractor with
# no training noise gets from the data. Settings from benchmarks/recipes.py (docs/training.md).
FROZEN_SIZE = 224
FROZEN_L2 = 0.1


def unavailable_baselines() -> dict[str, str]:
    """Baselines that cannot run here, each with the one-line reason (the panel prints it)."""
    from classifier.model.lite0_weights import PretrainedWeightsMissing, imagenet_weights_path

    try:
        imagenet_weights_path()
    except PretrainedWeightsMissing as exc:
        return {FROZEN_LITE0: str(exc)}
    return {}


def resized(images: np.ndarray, size: int) -> np.ndarray:
    """[N, S, S, 1] -> [N, size, size, 1] (bilinear), unchanged when already that size."""
    if images.shape[1] == size:
        return images
    return np.stack(
        [
            np.asarray(Image.fromarray(img[..., 0], mode="F").resize((size, size), Image.Resampling.BILINEAR))
            for img in images.astype(np.float32)
        ]
    )[..., None]


def logistic_frozen_lite0_predict(
    train: np.ndarray,
    train_labels: np.ndarray,
    test: np.ndarray,
    num_classes: int,
    *,
    feature_cache: Path | None = None,
) -> np.ndarray:
    """Class-balanced logistic regression (L2 `FROZEN_L2`) on frozen ImageNet Lite0 features at 224 px."""
    from classifier.model.network import build_model
    from training.frozen_features import Extractor, feature_store
    from training.linear_head import fit_linear_head

    store = feature_store(
        Extractor("efficientnet_lite0", "imagenet", FROZEN_SIZE),
        lambda: build_model(image_size=FROZEN_SIZE, weights="imagenet", backbone="efficientnet_lite0"),
        feature_cache,
    )
    head = fit_linear_head(
        store(resized(train, FROZEN_SIZE)), np.asarray(train_labels), num_classes, l2=FROZEN_L2, balanced=True
    )
    return head.probabilities(store(resized(test, FROZEN_SIZE)))


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
        sample_weight = sample_weights(labels, num_classes, balanced=True) * len(labels)  # mean 1
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


@dataclass(frozen=True)
class LogisticPCA:
    """Whitened PCA, then class-weighted multinomial logistic regression (L2), fitted by full-batch
    gradient descent from zero: deterministic, no random initialisation."""

    mean: np.ndarray
    projection: np.ndarray  # [features, components], whitening included
    weights: np.ndarray  # [components, classes]
    bias: np.ndarray

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        labels: np.ndarray,
        num_classes: int,
        *,
        components: int = PCA_COMPONENTS,
        l2: float = LOGISTIC_L2,
        steps: int = LOGISTIC_STEPS,
    ) -> LogisticPCA:
        if len(features) == 0:
            raise ValueError("no training images")
        labels = np.asarray(labels, dtype=np.int64)
        mean = features.mean(axis=0)
        centred = (features - mean).astype(np.float64)
        variance, vectors = _principal_axes(centred)
        keep = max(1, min(components, int((variance > variance[0] * 1e-10).sum())))
        projection = vectors[:, :keep] / np.sqrt(np.maximum(variance[:keep], 1e-12))
        z = centred @ projection
        sample_weight = sample_weights(labels, num_classes, balanced=True)
        onehot = np.eye(num_classes)[labels]
        weights, bias = np.zeros((keep, num_classes)), np.zeros(num_classes)
        for _ in range(steps):  # unit-variance inputs: a step of 1 is stable for this loss
            error = (softmax(z @ weights + bias) - onehot) * sample_weight[:, None]
            weights -= z.T @ error + l2 * weights
            bias -= error.sum(axis=0)
        return cls(mean=mean, projection=projection, weights=weights, bias=bias)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return softmax(((features - self.mean) @ self.projection) @ self.weights + self.bias)


def _principal_axes(centred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(variances, axes as columns), largest first, from the eigenvectors of the smaller of the
    covariance (features x features) and the Gram matrix (images x images): cheaper than an SVD."""
    n = max(1, len(centred) - 1)
    if centred.shape[0] >= centred.shape[1]:
        variance, axes = np.linalg.eigh(centred.T @ centred / n)
    else:
        variance, left = np.linalg.eigh(centred @ centred.T / n)
        axes = centred.T @ left / np.sqrt(np.maximum(variance * n, 1e-12))
    return variance[::-1], axes[:, ::-1]


def logistic_pca_predict(
    train: np.ndarray, train_labels: np.ndarray, test: np.ndarray, num_classes: int
) -> np.ndarray:
    """Probabilities of logistic regression on the principal components of 32x32 thumbnails."""
    model = LogisticPCA.fit(thumbnails(train, PCA_THUMB), np.asarray(train_labels), num_classes)
    return model.probabilities(thumbnails(test, PCA_THUMB))


def baseline_probabilities(
    train: np.ndarray,
    train_labels: np.ndarray,
    test: np.ndarray,
    num_classes: int,
    *,
    feature_cache: Path | None = None,
    frozen: bool = True,
) -> dict[str, np.ndarray]:
    """Each available baseline's [N, classes] probabilities on `test` (1-NN: one-hot). The frozen Lite0
    baseline only where its weights are installed (`unavailable_baselines` says why not) and `frozen`;
    its features are cached under `feature_cache`."""
    nn = nearest_neighbour_predict(train, train_labels, test)
    out = {
        "nearest_neighbour": np.eye(num_classes)[nn],
        "ridge": ridge_predict(train, train_labels, test, num_classes),
        "logistic_pca": logistic_pca_predict(train, train_labels, test, num_classes),
    }
    if frozen and not unavailable_baselines():
        out[FROZEN_LITE0] = logistic_frozen_lite0_predict(
            train, train_labels, test, num_classes, feature_cache=feature_cache
        )
    return out
