"""Small parts for the unit tests of the worker's steps: a stub model, decoded instances, records.

No Kafka, no database, no Keras: each step is tested alone (the worker's own tests run them together).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
from prometheus_client import CollectorRegistry

from classifier.model.artifact import ModelCard
from classifier.model.serving import ServingModel
from classifier.worker.decoding import DecodedInstance, Preprocessing
from classifier.worker.metrics import WorkerMetrics
from common.vocabulary import CLASS_NAMES
from storage.stream.contract import Record
from storage.stream.events import InstanceEvent

T0 = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


def metrics() -> WorkerMetrics:
    return WorkerMetrics(CollectorRegistry())


def event(n: int, *, study: str = "1.2.3", reprocess: str | None = None) -> InstanceEvent:
    return InstanceEvent(
        study_instance_uid=study,
        series_instance_uid=f"{study}.1",
        sop_instance_uid=f"{study}.1.{n}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        modality="CT",
        archive_uri=f"file:///archive/{n}.dcm",
        sha256="0" * 64,
        size_bytes=10,
        calling_ae="SCU",
        received_at=T0,
        instance_number=n,
        number_of_frames=1,
        reprocess_model_version=reprocess,
    )


def record(offset: int, value: bytes, *, partition: int = 0) -> Record:
    return Record("instances", partition, offset, b"k", value)


class StubNet:
    """Stands for a Keras model: each image's class probabilities are fixed by its mean pixel value."""

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        k = len(CLASS_NAMES)
        out = np.zeros((len(batch), k))
        for i, image in enumerate(batch):
            out[i, int(round(float(image.mean()))) % k] = 1.0
        return out


def serving(version: str = "v1", *, model_version_id: int = 1, image_size: int = 4) -> ServingModel:
    card = ModelCard(
        version=version,
        classes=list(CLASS_NAMES),
        image_size=image_size,
        window={"center": 40.0, "width": 400.0},
        preprocessing={},
        backend="stub",
        keras_version="stub",
        manifest_hash=None,
        metrics={},
        weights_file="-",
        weights_sha256="-",
    )
    return ServingModel(model_version_id, version, StubNet(), card)


def decoded(
    n: int, *, frames: int = 1, value: float = 0.0, model: ServingModel | None = None, **kw: object
) -> DecodedInstance:
    """Instance `n` decoded for `model`'s preprocessing, its frames all `value` (the stub's class index)."""
    pre = (model or serving()).preprocessing
    tensors = np.full((frames, pre.image_size, pre.image_size, 3), value, dtype=np.float32)
    e = event(n, **kw)  # type: ignore[arg-type]
    return DecodedInstance(record(n, e.to_json()), e, "ACC", "CT", tensors, pre)


def preprocessing(size: int) -> Preprocessing:
    return serving(image_size=size).preprocessing
