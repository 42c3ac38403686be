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
    probs = baseline_probabilities(train, labels, test, 2, frozen=False)
    for name, p in probs.items():
        assert p.shape == (20, 2) and np.allclose(p.sum(axis=1), 1.0), name
        assert (p.argmax(axis=1) == truth).mean() >= 0.95, name
    brighter = baseline_probabilities(train, labels, np.clip(test * 0.8 + 30, 0, 255), 2, frozen=False)
    for name in probs:
        assert (brighter[name].argmax(axis=1) == probs[name].argmax(axis=1)).all(), name


def test_ridge_weights_classes_evenly() -> None:
    """With 30:3 imbalance and uninformative features, the balanced weights keep the bias near zero for both."""
    rng = np.random.default_rng(1)
    features = thumbnails(rng.uniform(0, 255, (33, 32, 32, 1)).astype(np.float32))
    labels = np.array([0] * 30 + [1] * 3)
    model = RidgeClassifier.fit(features, labels, 2, alpha=1e6)
    assert np.allclose(model.bias, 0.0, atol=1e-6)


def test_logistic_pca_is_deterministic_and_balanced() -> None:
    """The convex baseline gives the same probabilities twice and still finds a rare class (3 of 33 images)."""
    from training.baseline import LogisticPCA

    rng = np.random.default_rng(2)
    images = np.concatenate([_images(rng, 30, 0), _images(rng, 3, 1)])
    labels = np.array([0] * 30 + [1] * 3)
    features = thumbnails(images)
    a = LogisticPCA.fit(features, labels, 2).probabilities(features)
    b = LogisticPCA.fit(features, labels, 2).probabilities(features)
    np.testing.assert_array_equal(a, b)
    assert (a.argmax(axis=1) == labels).all()
    test = thumbnails(_images(rng, 5, 1))
    assert (LogisticPCA.fit(features, labels, 2).probabilities(test).argmax(axis=1) == 1).all()


def test_principal_axes_agree_whichever_side_is_smaller() -> None:
    """Fewer images than pixels (Gram route) and more (covariance route) give the same leading variances as an SVD."""
    from training.baseline import _principal_axes

    rng = np.random.default_rng(3)
    for shape in ((20, 50), (50, 20)):
        x = rng.normal(size=shape)
        x -= x.mean(axis=0)
        variance, axes = _principal_axes(x)
        singular = np.linalg.svd(x, compute_uv=False)
        k = min(shape) - 1
        np.testing.assert_allclose(variance[:k], singular[:k] ** 2 / (shape[0] - 1), rtol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(axes[:, :k], axis=0), 1.0, rtol=1e-6)
