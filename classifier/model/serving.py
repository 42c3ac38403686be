"""The model a worker serves: the active model version, loaded from its artifact and checked.

Its probabilities are the calibrated ones (the card's temperature), and, when the artifact carries
shift statistics, every slice gets a shift score and a flag (`classifier.model.shift`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classifier.model.artifact import ModelCard, load_artifact
from classifier.model.calibration import apply_temperature
from classifier.model.shift import FEATURE_LAYER, ShiftStats
from classifier.worker.decoding import Preprocessing
from classifier.worker.errors import ArtifactError
from common.files import file_uri_path, sha256_file
from storage.db.tables import ModelVersion


@dataclass(frozen=True)
class Scored:
    probabilities: np.ndarray  # [N, classes], calibrated
    shift_scores: np.ndarray | None  # [N], None without a shift detector
    shifted: np.ndarray | None  # [N] bool: score above the card's threshold


@dataclass(frozen=True)
class ServingModel:
    model_version_id: int
    version: str
    model: Any  # keras.Model; typed loosely so this module does not import keras itself
    card: ModelCard
    shift: ShiftStats | None = None
    scorer: Any = None  # keras.Model with two outputs: probabilities and penultimate features

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing(image_size=self.card.image_size, window=self.card.window_obj)

    @property
    def shift_threshold(self) -> float | None:
        shift = self.card.decision.get("shift") or {}
        return float(shift["threshold"]) if "threshold" in shift else None

    def predict(self, tensors: np.ndarray, batch_size: int) -> np.ndarray:
        """Calibrated class probabilities [N, classes], `batch_size` images per call of the compiled function."""
        return self.score(tensors, batch_size).probabilities

    def score(self, tensors: np.ndarray, batch_size: int) -> Scored:
        """Calibrated probabilities and, with a shift detector, each slice's shift score and flag."""
        k = len(self.card.classes)
        use_scorer = self.scorer is not None and self.shift is not None and self.shift_threshold is not None
        if len(tensors) == 0:
            empty = np.zeros(0) if use_scorer else None
            return Scored(
                np.zeros((0, k), dtype=np.float32), empty, None if empty is None else empty.astype(bool)
            )
        probs, feats = [], []
        for i in range(0, len(tensors), batch_size):
            batch = tensors[i : i + batch_size]
            if use_scorer:
                p, f = self.scorer.predict_on_batch(batch)
                feats.append(np.asarray(f, dtype=np.float64))
            else:
                p = self.model.predict_on_batch(batch)
            probs.append(np.asarray(p, dtype=np.float64))
        calibrated = apply_temperature(np.concatenate(probs), self.card.temperature).astype(np.float32)
        if not use_scorer:
            return Scored(calibrated, None, None)
        scores = self.shift.scores(np.concatenate(feats))  # type: ignore[union-attr]
        return Scored(calibrated, scores, scores > self.shift_threshold)  # type: ignore[operator]

    def warm_up(self) -> None:
        """Trace the predict function for two batch sizes now: Keras' TensorFlow backend then relaxes
        the batch dimension, so no batch size pays for tracing (seconds on a CPU) while serving."""
        size = self.card.image_size
        model = self.scorer if self.scorer is not None else self.model
        for n in (1, 2):
            model.predict_on_batch(np.zeros((n, size, size, 3), dtype=np.float32))


def artifact_directory(artifact_uri: str) -> Path:
    """A model version's artifact folder from its `file://` URI or path."""
    return Path(file_uri_path(artifact_uri) or artifact_uri)


def feature_scorer(model: Any) -> Any:
    """The model with a second output: its penultimate (`dense_512`) features."""
    import keras

    return keras.Model(model.inputs, [model.outputs[0], model.get_layer(FEATURE_LAYER).output])


def load_shift_stats(directory: Path, card: ModelCard) -> ShiftStats | None:
    """The artifact's shift statistics, checked against the card's hash; None when the card has none."""
    shift = card.decision.get("shift") or {}
    if not shift.get("file"):
        return None
    path = directory / str(shift["file"])
    if not path.is_file():
        raise ArtifactError(f"shift statistics {path} are missing")
    if shift.get("sha256") and sha256_file(path) != shift["sha256"]:
        raise ArtifactError(f"shift statistics {path} do not match the card's sha256")
    return ShiftStats.load(path)


def load_serving_model(row: ModelVersion) -> ServingModel:
    """Rebuild and load `row`'s artifact; the weights must hash to what the registry recorded."""
    directory = artifact_directory(row.artifact_uri)
    model, card = load_artifact(directory, expected_sha256=row.sha256)
    shift = load_shift_stats(directory, card)
    serving = ServingModel(
        model_version_id=row.id,
        version=row.version,
        model=model,
        card=card,
        shift=shift,
        scorer=feature_scorer(model) if shift is not None else None,
    )
    serving.warm_up()
    return serving
