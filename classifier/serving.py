"""The model a worker serves: the active model version, loaded from its artifact and checked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classifier.artifact import ModelCard, load_artifact
from classifier.decoding import Preprocessing
from common.files import file_uri_path
from storage.models import ModelVersion


@dataclass(frozen=True)
class ServingModel:
    model_version_id: int
    version: str
    model: Any  # keras.Model; typed loosely so this module does not import keras itself
    card: ModelCard

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing(image_size=self.card.image_size, window=self.card.window_obj)

    def predict(self, tensors: np.ndarray, batch_size: int) -> np.ndarray:
        """Class probabilities [N, classes], `batch_size` images per call of the compiled function."""
        if len(tensors) == 0:
            return np.zeros((0, len(self.card.classes)), dtype=np.float32)
        parts = [
            np.asarray(self.model.predict_on_batch(tensors[i : i + batch_size]), dtype=np.float32)
            for i in range(0, len(tensors), batch_size)
        ]
        return np.concatenate(parts)

    def warm_up(self) -> None:
        """Trace the predict function for two batch sizes now: Keras' TensorFlow backend then relaxes
        the batch dimension, so no batch size pays for tracing (seconds on a CPU) while serving."""
        size = self.card.image_size
        for n in (1, 2):
            self.model.predict_on_batch(np.zeros((n, size, size, 3), dtype=np.float32))


def artifact_directory(artifact_uri: str) -> Path:
    """A model version's artifact folder from its `file://` URI or path."""
    return Path(file_uri_path(artifact_uri) or artifact_uri)


def load_serving_model(row: ModelVersion) -> ServingModel:
    """Rebuild and load `row`'s artifact; the weights must hash to what the registry recorded."""
    model, card = load_artifact(artifact_directory(row.artifact_uri), expected_sha256=row.sha256)
    serving = ServingModel(model_version_id=row.id, version=row.version, model=model, card=card)
    serving.warm_up()
    return serving
