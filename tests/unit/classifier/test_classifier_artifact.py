"""Artifacts: weights + model card round-trip, and refusal of every kind of mismatch."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from classifier.model.artifact import CARD_FILE, WEIGHTS_FILE, load_artifact, read_card, save_artifact
from classifier.model.network import build_model
from classifier.model.preprocess import Window
from classifier.worker.errors import ArtifactError
from common.vocabulary import CLASS_NAMES


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, keras.Model]:
    keras.utils.set_random_seed(7)
    model = build_model(image_size=32, weights=None)
    directory = tmp_path_factory.mktemp("artifact")
    save_artifact(
        model,
        directory,
        {
            "version": "v7",
            "window": Window(50, 350),
            "manifest_hash": "ab" * 32,
            "metrics": {"macro_f1": 0.61},
        },
    )
    return directory, model


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for name in (CARD_FILE, WEIGHTS_FILE):
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


def test_card_records_what_serving_needs(saved: tuple[Path, keras.Model]) -> None:
    """The card gives version, classes, size, window, preprocessing, backend, manifest, metrics, sha256."""
    card = json.loads((saved[0] / CARD_FILE).read_text())
    assert card["version"] == "v7"
    assert card["classes"] == list(CLASS_NAMES)
    assert card["image_size"] == 32
    assert card["window"] == {"center": 50.0, "width": 350.0}
    assert card["preprocessing"]["id"] == "kidneyct-v1"
    assert card["backend"] == keras.backend.backend()
    assert card["manifest_hash"] == "ab" * 32
    assert card["metrics"] == {"macro_f1": 0.61}
    assert len(card["weights_sha256"]) == 64


def test_loading_rebuilds_and_predicts_identically(saved: tuple[Path, keras.Model]) -> None:
    """The rebuilt model with loaded weights gives exactly the saved model's probabilities."""
    directory, original = saved
    loaded, card = load_artifact(
        directory, expected_image_size=32, expected_sha256=read_card(directory).weights_sha256
    )
    x = np.random.default_rng(3).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), original.predict(x, verbose=0))
    assert card.window_obj == Window(50, 350)


def test_changed_weights_are_refused(saved: tuple[Path, keras.Model], tmp_path: Path) -> None:
    """One flipped byte in the weights file fails the sha256 check."""
    directory = _copy(saved[0], tmp_path / "a")
    data = bytearray((directory / WEIGHTS_FILE).read_bytes())
    data[-100] ^= 0xFF
    (directory / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        load_artifact(directory)


def test_registry_hash_mismatch_is_refused(saved: tuple[Path, keras.Model]) -> None:
    """Weights that differ from the hash registered in the database are refused."""
    with pytest.raises(ArtifactError, match="registered"):
        load_artifact(saved[0], expected_sha256="0" * 64)


def test_other_classes_are_refused(saved: tuple[Path, keras.Model], tmp_path: Path) -> None:
    """A card with a different class order would mislabel everything: refused."""
    directory = _copy(saved[0], tmp_path / "b")
    card = json.loads((directory / CARD_FILE).read_text())
    card["classes"] = ["Normal", "Cyst", "Stone", "Tumor"]
    (directory / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(ArtifactError, match="classes"):
        load_artifact(directory)


def test_other_input_size_is_refused(saved: tuple[Path, keras.Model]) -> None:
    """Asking for 224 pixels from a 32-pixel artifact is refused."""
    with pytest.raises(ArtifactError, match="input size"):
        load_artifact(saved[0], expected_image_size=224)


def test_card_lying_about_size_is_refused(saved: tuple[Path, keras.Model], tmp_path: Path) -> None:
    """Weights that do not fit the architecture the card describes give ArtifactError."""
    directory = _copy(saved[0], tmp_path / "c")
    card = json.loads((directory / CARD_FILE).read_text())
    card["dropout"] = 0.4
    card["image_size"] = 64  # convolution weights fit any size: the head must still load
    (directory / CARD_FILE).write_text(json.dumps(card))
    model, loaded = load_artifact(directory)
    assert loaded.image_size == 64 and model.input_shape == (None, 64, 64, 3)


def test_missing_card_is_a_clear_error(tmp_path: Path) -> None:
    """An empty folder is not an artifact."""
    with pytest.raises(ArtifactError, match="no model card"):
        load_artifact(tmp_path)


def test_model_with_wrong_output_count_cannot_be_saved(tmp_path: Path) -> None:
    """Only four-class models become artifacts."""
    model = build_model(image_size=32, num_classes=3)
    with pytest.raises(ArtifactError, match="outputs"):
        save_artifact(model, tmp_path, {"version": "bad"})


def test_head_and_normalization_survive_the_card(tmp_path: Path) -> None:
    """A Flatten head with `tf` normalisation is recorded in the card and rebuilt the same by load_artifact."""
    keras.utils.set_random_seed(8)
    model = build_model(image_size=64, head="flatten", normalization="tf")
    card = save_artifact(model, tmp_path / "a", {"version": "v-flat", "normalization": "tf"})
    assert (card.head, card.normalization) == ("flatten", "tf")
    assert card.preprocessing["id"].endswith("+tf") and "x/127.5-1" in card.preprocessing["description"]
    loaded, read = load_artifact(tmp_path / "a")
    assert (read.head, read.normalization) == ("flatten", "tf")
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_array_equal(
        np.asarray(loaded.predict(x, verbose=0)), np.asarray(model.predict(x, verbose=0))
    )


def test_old_cards_mean_the_seed_graph(tmp_path: Path) -> None:
    """A card written before heads and normalisations existed reads as avg + caffe."""
    keras.utils.set_random_seed(9)
    save_artifact(build_model(image_size=32), tmp_path / "old", {"version": "old"})
    card_path = tmp_path / "old" / CARD_FILE
    data = json.loads(card_path.read_text())
    del data["head"], data["normalization"]
    card_path.write_text(json.dumps(data))
    _, card = load_artifact(tmp_path / "old")
    assert (card.head, card.normalization) == ("avg", "caffe")


def test_a_trained_model_is_saved_without_its_optimizer_state(tmp_path: Path) -> None:
    """After fit (Adam: two slots per weight), the artifact holds the weights only, loads, and the model trains on."""
    import h5py

    keras.utils.set_random_seed(3)
    model = build_model(image_size=32, weights=None, from_scratch=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    x = np.random.default_rng(4).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    y = np.eye(len(CLASS_NAMES), dtype="float32")[[0, 1, 2, 3]]
    model.fit(x, y, epochs=1, verbose=0)
    save_artifact(model, tmp_path, {"version": "trained", "from_scratch": True})
    with h5py.File(tmp_path / WEIGHTS_FILE) as h5:
        assert "optimizer" not in h5
    weight_bytes = sum(np.asarray(w).nbytes for w in model.weights)
    assert (tmp_path / WEIGHTS_FILE).stat().st_size < 1.1 * weight_bytes
    loaded, _ = load_artifact(tmp_path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert model.optimizer is not None
    model.fit(x, y, epochs=1, verbose=0)  # the optimizer was put back, state and all
