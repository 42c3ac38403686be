"""Lighter backbones (`build_model(backbone=...)`): they train, and the artifact rebuilds the same graph.

The card records the backbone and its normalisation, and `load_artifact` rebuilds from them, so a
worker serves exactly what was trained. 32 px, random weights, one step: fast on a CPU.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from classifier.model.artifact import CARD_FILE, load_artifact, read_card, save_artifact
from classifier.model.network import (
    BACKBONE_NORMALIZATION,
    BACKBONES,
    backbone_of,
    build_model,
    get_base,
    set_trainable_for_phase,
)
from training.run import TrainingError, make_model

SIZE = 32


def _pixels(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)


@pytest.mark.slow  # trains EfficientNetB0 (150 s on a busy 2-core box): not in `make check`
def test_efficientnet_trains_one_step_saves_reloads_and_predicts_identically(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_model(image_size=SIZE, weights=None, from_scratch=True, backbone="efficientnetb0")
    assert backbone_of(model) == "efficientnetb0"
    set_trainable_for_phase(model, 1, from_scratch=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    x, y = _pixels(8, 1), np.eye(4, dtype=np.float32)[np.arange(8) % 4]
    before = [keras.ops.convert_to_numpy(w).copy() for w in get_base(model).trainable_weights[:3]]
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    after = [keras.ops.convert_to_numpy(w) for w in get_base(model).trainable_weights[:3]]
    assert any(not np.allclose(b, a) for b, a in zip(before, after, strict=True)), "the step trained nothing"

    card = save_artifact(model, tmp_path / "a", {"version": "v-eff", "from_scratch": True})
    assert card.backbone == "efficientnetb0"
    assert card.normalization == BACKBONE_NORMALIZATION["efficientnetb0"] == "none"
    assert card.preprocessing["id"].endswith("+none")  # the card says the base normalises itself

    reloaded, loaded_card = load_artifact(tmp_path / "a")
    assert loaded_card.backbone == "efficientnetb0" and backbone_of(reloaded) == "efficientnetb0"
    probe = _pixels(5, 2)
    np.testing.assert_array_equal(model.predict(probe, verbose=0), reloaded.predict(probe, verbose=0))


def test_old_cards_without_a_backbone_rebuild_resnet50(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_model(image_size=SIZE, weights=None)
    save_artifact(model, tmp_path / "old", {"version": "v-old"})
    card_path = tmp_path / "old" / CARD_FILE
    data = json.loads(card_path.read_text())
    assert data.pop("backbone") == "resnet50" and data["normalization"] == "caffe"
    card_path.write_text(json.dumps(data))
    assert read_card(tmp_path / "old").backbone == "resnet50"
    reloaded, _ = load_artifact(tmp_path / "old")
    assert backbone_of(reloaded) == "resnet50"


def test_unknown_backbone_is_refused():
    with pytest.raises(ValueError, match="backbone must be one of"):
        build_model(image_size=SIZE, weights=None, backbone="vgg16")


def test_continuing_from_an_artifact_of_another_backbone_is_refused(tmp_path):
    keras.utils.set_random_seed(0)
    save_artifact(
        build_model(image_size=SIZE, weights=None, backbone="efficientnetb0"),
        tmp_path / "e",
        {"version": "e"},
    )
    with pytest.raises(TrainingError, match="is a efficientnetb0, not --backbone resnet50"):
        make_model(SIZE, str(tmp_path / "e"), "resnet50")
    model, _ = make_model(SIZE, str(tmp_path / "e"), "efficientnetb0")
    assert backbone_of(model) == "efficientnetb0"


def test_densenet_builds_with_its_own_normalisation():
    model = build_model(image_size=SIZE, weights=None, backbone="densenet121")
    assert backbone_of(model) == "densenet121"
    assert model.get_layer("resnet50_preprocess").mode == "torch"
    assert model.output_shape == (None, 4)


def test_train_offers_exactly_the_backbones_the_model_can_build():
    """`kidneyct train --backbone` lists its choices without importing Keras; they must match the model's."""
    from kidneyct.commands.train import train

    (option,) = [p for p in train.params if p.name == "backbone"]
    assert set(option.type.choices) == set(BACKBONES)


def test_the_tiny_backbone_trains_reloads_identically_and_keeps_a_map_for_grad_cam(tmp_path):
    """The demo's `tiny` base: random weights only, one step trains it, the card rebuilds it, and at
    64 px its last feature map is 8x8 (Grad-CAM has something to show)."""
    from classifier.report.gradcam import feature_model, too_small_for_heatmaps

    keras.utils.set_random_seed(0)
    model = build_model(image_size=64, weights=None, from_scratch=True, backbone="tiny")
    assert backbone_of(model) == "tiny" and model.count_params() < 200_000
    assert feature_model(model).output_shape[1:3] == (8, 8) and too_small_for_heatmaps(model) is None
    set_trainable_for_phase(model, 1, from_scratch=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    x = np.random.default_rng(1).uniform(0, 255, (8, 64, 64, 3)).astype(np.float32)
    model.fit(x, np.eye(4, dtype=np.float32)[np.arange(8) % 4], batch_size=8, epochs=1, verbose=0)
    card = save_artifact(model, tmp_path / "t", {"version": "v-tiny", "from_scratch": True})
    assert card.backbone == "tiny" and card.normalization == "rescale"
    reloaded, _ = load_artifact(tmp_path / "t")
    np.testing.assert_array_equal(model.predict(x, verbose=0), reloaded.predict(x, verbose=0))
    set_trainable_for_phase(model, 2, unfreeze_from="conv4_")  # phase 2 finds its last block


def test_the_tiny_backbone_has_no_pretrained_weights():
    with pytest.raises(TrainingError, match="--weights none"):
        make_model(64, "imagenet", "tiny")
    with pytest.raises(ValueError, match="no pre-trained weights"):
        build_model(image_size=64, weights="imagenet", backbone="tiny")
