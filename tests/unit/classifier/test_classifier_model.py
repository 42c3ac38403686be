"""The rebuilt ResNet50: architecture, in-graph preprocessing, fine-tuning phases, backend hygiene."""

from __future__ import annotations

import re
from pathlib import Path

import keras
import numpy as np
import pytest

import classifier.model.network as model_module
from classifier.model.network import (
    BASE_NAME,
    PREPROCESS_NAME,
    build_model,
    get_base,
    set_trainable_for_phase,
)
from common.vocabulary import CLASS_NAMES


@pytest.fixture(scope="module")
def tiny() -> keras.Model:
    keras.utils.set_random_seed(1)
    return build_model(image_size=32, weights=None)


def test_output_is_a_probability_per_class(tiny: keras.Model) -> None:
    """Raw [0,255] pixels in, one softmax probability per class out, in CLASS_NAMES order."""
    x = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    p = np.asarray(tiny.predict(x, verbose=0))
    assert p.shape == (3, len(CLASS_NAMES)) == (3, 4)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    assert tiny.input_shape == (None, 32, 32, 3)


def test_head_is_the_seed_architecture(tiny: keras.Model) -> None:
    """GAP -> Dense(512, relu) -> Dropout(0.4) -> Dense(4, softmax) on a ResNet50 base."""
    names = [layer.name for layer in tiny.layers]
    assert names[-5:] == [BASE_NAME, "avg_pool", "dense_512", "dropout", "predictions"]
    assert tiny.get_layer("dense_512").units == 512
    assert tiny.get_layer("dense_512").activation.__name__ == "relu"
    assert tiny.get_layer("dropout").rate == pytest.approx(0.4)
    assert tiny.get_layer("predictions").activation.__name__ == "softmax"
    assert get_base(tiny).output.shape[-1] == 2048  # the feature maps Grad-CAM weighs


def test_in_graph_preprocessing_equals_keras_resnet50_preprocess_input(tiny: keras.Model) -> None:
    """The graph layer does exactly what keras.applications.resnet50.preprocess_input does."""
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    expected = keras.applications.resnet50.preprocess_input(x.copy())
    actual = np.asarray(tiny.get_layer(PREPROCESS_NAME)(x))
    np.testing.assert_allclose(actual, expected, atol=1e-4)


def test_phase_one_trains_only_the_head(tiny: keras.Model) -> None:
    """Phase 1 freezes the whole base: only the two Dense layers' kernels and biases train."""
    set_trainable_for_phase(tiny, 1)
    assert len(tiny.trainable_weights) == 4
    assert not get_base(tiny).trainable


def test_phase_two_unfreezes_conv5_but_not_batchnorm(tiny: keras.Model) -> None:
    """Phase 2 trains the conv5 block's convolutions (BN stays frozen) plus the head."""
    set_trainable_for_phase(tiny, 2)
    base = get_base(tiny)
    trainable = [layer for layer in base.layers if layer.trainable and layer.weights]
    assert trainable and all(layer.name.startswith("conv5_") for layer in trainable)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)
    assert not base.get_layer("conv4_block6_3_conv").trainable
    assert len(tiny.trainable_weights) == 4 + 2 * 10  # 10 conv5 convolutions with bias


def test_bad_phase_and_prefix_are_refused(tiny: keras.Model) -> None:
    """An unknown phase or a prefix that matches no layer is an error, not a silent no-op."""
    with pytest.raises(ValueError, match="phase"):
        set_trainable_for_phase(tiny, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="conv9_"):
        set_trainable_for_phase(tiny, 2, unfreeze_from="conv9_")


def test_too_small_input_is_refused() -> None:
    """ResNet50 needs at least 32x32 pixels."""
    with pytest.raises(ValueError, match="at least 32"):
        build_model(image_size=16)


def test_model_code_uses_no_tensorflow_api() -> None:
    """Backend-agnostic: the model module never touches tf.* or imports tensorflow."""
    source = Path(model_module.__file__).read_text()
    assert "tensorflow" not in source
    assert not re.search(r"\btf\.", source)


@pytest.mark.parametrize(
    ("mode", "reference"),
    [
        ("caffe", lambda x: keras.applications.imagenet_utils.preprocess_input(x, mode="caffe")),
        ("tf", lambda x: keras.applications.imagenet_utils.preprocess_input(x, mode="tf")),
        ("torch", lambda x: keras.applications.imagenet_utils.preprocess_input(x, mode="torch")),
        ("rescale", lambda x: x / 255.0),
        ("none", lambda x: x),
    ],
)
def test_every_normalization_equals_what_a_notebook_did(mode: str, reference) -> None:  # type: ignore[no-untyped-def]
    """Each in-graph normalisation does what Keras' preprocess_input mode (or rescale=1/255) does."""
    from classifier.model.network import ResNet50Preprocess

    x = np.random.default_rng(2).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    actual = np.asarray(ResNet50Preprocess(mode=mode)(x))
    np.testing.assert_allclose(actual, reference(x.copy()), atol=1e-4)


def test_flatten_head_and_unknown_options() -> None:
    """head="flatten" puts Flatten where the pooling was (its Dense kernel grows with the input); bad options are refused."""
    from classifier.model.network import head_of

    keras.utils.set_random_seed(3)
    flat = build_model(image_size=64, head="flatten", normalization="rescale")
    assert head_of(flat) == "flatten" and "avg_pool" not in [layer.name for layer in flat.layers]
    assert tuple(flat.get_layer("dense_512").kernel.shape) == (2 * 2 * 2048, 512)
    with pytest.raises(ValueError, match="head"):
        build_model(image_size=32, head="max")
    with pytest.raises(ValueError, match="normalization"):
        build_model(image_size=32, normalization="imagenet")
