"""Grad-CAM's closed form matches the model, and finite differences; weights errors are clear."""

from __future__ import annotations

import keras
import keras.src.applications.resnet as keras_resnet
import numpy as np
import pytest

from classifier.model.network import build_model
from classifier.report.gradcam import feature_model, grad_cam, head_logits, head_weights, logit_gradient
from training.run import TrainingError, make_model


@pytest.fixture(scope="module")
def model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_model(image_size=64, weights=None)


def test_head_replica_reproduces_the_models_probabilities(model: keras.Model) -> None:
    """softmax of the numpy head's logits equals `model.predict`: the closed form describes this model."""
    x = np.random.default_rng(1).uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)
    cam = grad_cam(model, x)
    probs = np.exp(cam.logits - cam.logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs, model.predict(x, verbose=0), atol=1e-5)
    assert cam.heatmaps.shape == (3, 64, 64) and cam.heatmaps.min() >= 0 and cam.heatmaps.max() <= 1
    np.testing.assert_array_equal(cam.class_index, probs.argmax(axis=1))


def test_closed_form_gradient_matches_finite_differences(model: keras.Model) -> None:
    """d logit_c / dA from the formula equals central differences of the head at a few positions."""
    x = np.random.default_rng(2).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    features = np.asarray(feature_model(model).predict(x, verbose=0), dtype=np.float64)
    weights = head_weights(model)
    c = np.array([2])
    analytic = logit_gradient(features, weights, c)[0]
    rng = np.random.default_rng(3)
    eps = 1e-3
    for _ in range(5):
        i, j, k = (
            rng.integers(features.shape[1]),
            rng.integers(features.shape[2]),
            rng.integers(features.shape[3]),
        )
        up, down = features.copy(), features.copy()
        up[0, i, j, k] += eps
        down[0, i, j, k] -= eps
        numeric = (head_logits(up, weights)[0][0, 2] - head_logits(down, weights)[0][0, 2]) / (2 * eps)
        assert numeric == pytest.approx(analytic[k], rel=1e-4, abs=1e-9)


def test_imagenet_without_network_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """When the ImageNet weights cannot be downloaded, TrainingError says what to do instead."""
    monkeypatch.setenv("HOME", str(tmp_path))  # an empty ~/.keras: nothing cached
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / ".keras"))
    monkeypatch.setattr(keras_resnet, "BASE_WEIGHTS_PATH", "http://127.0.0.1:9/unreachable/")
    with pytest.raises(TrainingError, match="needs the internet.*--weights none"):
        make_model(32, "imagenet")


def test_unknown_weights_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A --weights value that is neither a keyword nor an existing path is refused."""
    with pytest.raises(TrainingError, match="must be imagenet, none"):
        make_model(32, str(tmp_path / "nope.h5"))
    bad = tmp_path / "bad.weights.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(TrainingError, match="not ResNet50 base weights"):
        make_model(32, str(bad))


def test_heat_maps_are_refused_when_the_last_feature_map_is_one_pixel(model: keras.Model) -> None:
    """At 32 px the last feature map is 1x1 (one uniform tint): refused with the size to use; 64 px is fine."""
    from classifier.report.gradcam import too_small_for_heatmaps

    assert too_small_for_heatmaps(model) is None  # 64 px: 2x2
    reason = too_small_for_heatmaps(build_model(image_size=32, weights=None))
    assert reason is not None and "1x1" in reason and "--image-size 64" in reason
