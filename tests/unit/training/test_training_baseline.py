"""The baselines (`training.baseline`): 1-NN and the class-weighted ridge classifier on thumbnails."""

from __future__ import annotations

import numpy as np

from training.baseline import RidgeClassifier, baseline_probabilities, thumbnails


def _images(rng: np.random.Generator, n: int, pattern: int) -> np.ndarray:
    """n 32 px images: a bright left half (pattern 0) or top half (pattern 1), plus noise."""
    base = np.zeros((32, 32), np.float32)
    if pattern == 0:
        base[:, :16] = 200
    else:
        base[:16, :] = 200
    return np.clip(base + rng.normal(0, 30, (n, 32, 32)), 0, 255)[..., None].astype(np.float32)


def test_baselines_learn_a_pixel_pattern_and_ignore_brightness() -> None:
    """Both baselines separate the two patterns; a brighter copy of a test set gets the same answers."""
    rng = np.random.default_rng(0)
    train = np.concatenate([_images(rng, 20, 0), _images(rng, 20, 1)])
    labels = np.repeat([0, 1], 20)
    test = np.concatenate([_images(rng, 10, 0), _images(rng, 10, 1)])
    truth = np.repeat([0, 1], 10)
    probs = baseline_probabilities(train, labels, test, 2)
    for name, p in probs.items():
        assert p.shape == (20, 2) and np.allclose(p.sum(axis=1), 1.0), name
        assert (p.argmax(axis=1) == truth).mean() >= 0.95, name
    brighter = baseline_probabilities(train, labels, np.clip(test * 0.8 + 30, 0, 255), 2)
    for name in probs:
        assert (brighter[name].argmax(axis=1) == probs[name].argmax(axis=1)).all(), name


def test_ridge_weights_classes_evenly() -> None:
    """With 30:3 imbalance and uninformative features, the balanced weights keep the bias near zero for both."""
    rng = np.random.default_rng(1)
    features = thumbnails(rng.uniform(0, 255, (33, 32, 32, 1)).astype(np.float32))
    labels = np.array([0] * 30 + [1] * 3)
    model = RidgeClassifier.fit(features, labels, 2, alpha=1e6)
    assert np.allclose(model.bias, 0.0, atol=1e-6)
