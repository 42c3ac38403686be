"""From-scratch mode: BatchNorm learns its statistics, and a random ResNet50 actually learns."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from classifier.model.artifact import load_artifact, save_artifact
from classifier.model.network import FROM_SCRATCH_BN_MOMENTUM, build_model, get_base, set_trainable_for_phase
from training.data import ImageSequence, to_three_channels
from training.fit import FitConfig, fit_two_phase, recalibrate_batchnorm

SIZE = 32
BN_LAYER = "conv1_bn"  # the first BatchNorm of the base: every input reaches it


def _moving_mean(model: keras.Model) -> np.ndarray:
    layer = get_base(model).get_layer(BN_LAYER)
    return np.array(keras.ops.convert_to_numpy(layer.moving_mean))


def _kernel(model: keras.Model, layer: str) -> np.ndarray:
    return np.array(keras.ops.convert_to_numpy(get_base(model).get_layer(layer).kernel))


def _one_step(model: keras.Model) -> None:
    x = np.random.default_rng(0).uniform(0, 255, (8, SIZE, SIZE, 3)).astype("float32")
    y = np.eye(4, dtype="float32")[np.arange(8) % 4]
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)


def separable_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """[n, 32, 32, 1] images in [0, 255]: class 0 a bright square, class 1 a dark disc on mid-grey."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images = np.empty((n, SIZE, SIZE, 1), dtype=np.float32)
    labels = np.arange(n) % 2
    for i, label in enumerate(labels):
        img = np.full((SIZE, SIZE), 110.0) + rng.normal(0, 8, (SIZE, SIZE))
        cy, cx = rng.integers(10, SIZE - 10, 2)
        r = int(rng.integers(5, 9))
        if label == 0:
            img[cy - r : cy + r, cx - r : cx + r] = 220.0
        else:
            img[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 20.0
        images[i, :, :, 0] = np.clip(img, 0, 255)
    return images, labels


@pytest.mark.slow
def test_from_scratch_batchnorm_updates_its_moving_statistics() -> None:
    """One fit step moves a from-scratch model's BN moving mean; a fine-tuning model's (phase 2) stays put."""
    keras.utils.set_random_seed(3)
    scratch = build_model(image_size=SIZE, weights=None, from_scratch=True)
    set_trainable_for_phase(scratch, 1, from_scratch=True)
    before = _moving_mean(scratch)
    _one_step(scratch)
    assert np.abs(_moving_mean(scratch) - before).max() > 1e-3

    pretrained = build_model(image_size=SIZE, weights=None, from_scratch=False)
    set_trainable_for_phase(pretrained, 2)  # conv5 and the head train, BatchNorm must not
    before, kernel = _moving_mean(pretrained), _kernel(pretrained, "conv5_block3_3_conv")
    _one_step(pretrained)
    np.testing.assert_array_equal(_moving_mean(pretrained), before)
    assert np.abs(_kernel(pretrained, "conv5_block3_3_conv") - kernel).max() > 0  # it did train


def test_phase_one_from_scratch_trains_every_layer() -> None:
    """From scratch, phase 1 makes the whole base trainable, BatchNorm included; fine-tuning freezes it."""
    model = build_model(image_size=SIZE, weights=None, from_scratch=True)
    set_trainable_for_phase(model, 1, from_scratch=True)
    base = get_base(model)
    assert all(layer.trainable for layer in base.layers)
    assert base.get_layer(BN_LAYER).trainable
    set_trainable_for_phase(model, 1, from_scratch=False)
    assert not base.trainable


@pytest.mark.slow  # builds, saves and reloads two ResNet50s (about 45 s on a busy box)
def test_artifact_records_and_honours_from_scratch(tmp_path: Path) -> None:
    """The card records the mode and load_artifact rebuilds that graph (BN momentum); old cards: fine-tuning."""
    keras.utils.set_random_seed(4)
    model = build_model(image_size=SIZE, weights=None, from_scratch=True)
    card = save_artifact(model, tmp_path / "a", {"version": "v-scratch", "from_scratch": True})
    assert card.from_scratch
    loaded, loaded_card = load_artifact(tmp_path / "a")
    assert loaded_card.from_scratch
    assert get_base(loaded).get_layer(BN_LAYER).momentum == FROM_SCRATCH_BN_MOMENTUM
    x = np.random.default_rng(1).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)

    old = save_artifact(build_model(image_size=SIZE), tmp_path / "b", {"version": "v-old"})
    old_loaded, old_card = load_artifact(tmp_path / "b")
    assert not old.from_scratch and not old_card.from_scratch
    assert get_base(old_loaded).get_layer(BN_LAYER).momentum == 0.99


@pytest.mark.slow
def test_from_scratch_learns_separable_shapes(tmp_path: Path) -> None:
    """From random weights, a short from-scratch run learns bright squares vs dark discs (training data)."""
    images, labels = separable_images(64, seed=0)
    keras.utils.set_random_seed(0)
    model = build_model(image_size=SIZE, weights=None, from_scratch=True)
    deep_bn = get_base(model).get_layer("conv5_block3_3_bn")
    variance_before = np.array(keras.ops.convert_to_numpy(deep_bn.moving_variance))
    train = ImageSequence(images, labels, num_classes=4, batch_size=16, shuffle=True, seed=0)
    result = fit_two_phase(
        model,
        train=train,
        train_labels=labels,
        val=None,
        num_classes=4,
        config=FitConfig(
            epochs_phase1=6, epochs_phase2=2, lr_phase1=1e-3, batch_size=16, patience=6, verbose=0
        ),
        checkpoint_dir=tmp_path,
        from_scratch=True,
    )
    assert [p.phase for p in result.phases] == [1]  # phase 2 is skipped from scratch
    probs = np.asarray(model.predict(to_three_channels(images), verbose=0))
    accuracy = float((probs.argmax(axis=1) == labels).mean())
    assert accuracy >= 0.9, f"training accuracy {accuracy:.3f}"
    # Inference uses moving statistics; they must have followed the batches, even deep in the base.
    variance_after = np.array(keras.ops.convert_to_numpy(deep_bn.moving_variance))
    assert np.abs(variance_after - variance_before).max() > 0.1


def test_recalibrate_batchnorm_sets_the_mean_batch_statistics() -> None:
    """Precise BN: moving mean/variance become the average of the batches' statistics, in nested models too."""
    inner = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization(name="bn")], name="inner")
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inner(inputs)))
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc, 2.0, (16, 3)).astype("float32") for loc in (1.0, 5.0, -3.0)]
    bn = inner.get_layer("bn")
    assert recalibrate_batchnorm(model, iter(batches)) == 3
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(bn.moving_mean),
        np.mean([b.mean(axis=0) for b in batches], axis=0),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(bn.moving_variance),
        np.mean([b.var(axis=0) for b in batches], axis=0),
        rtol=1e-4,
    )
    assert bn.momentum == 0.99  # restored


def test_best_epoch_is_the_best_balanced_validation_accuracy(tmp_path: Path) -> None:
    """Early stopping and checkpoints keep the epoch with the highest balanced accuracy, not the lowest loss."""
    from training.fit import BALANCED_ACCURACY, _callbacks

    stopping, checkpoint = _callbacks(f"val_{BALANCED_ACCURACY}", 3, tmp_path / "best.weights.h5", None)
    assert isinstance(stopping, keras.callbacks.EarlyStopping) and stopping.restore_best_weights
    assert stopping.monitor == checkpoint.monitor == "val_balanced_accuracy"
    # A higher accuracy is an improvement.
    assert stopping.mode == checkpoint.mode == "max"
    # Without a validation set (the refit on train + val) nothing selects: exactly the epochs asked.
    assert _callbacks("loss", 3, tmp_path / "refit.weights.h5", None) == []
