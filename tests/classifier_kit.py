"""Helpers for the classifier's tests: tiny real model artifacts, real DICOM files, events.

Importable from every test because `tests/` is on sys.path (pytest prepends the rootdir conftest's
folder). Nothing here mocks Kafka or the database; `MemoryConsumer`/`MemoryPublisher` are in-memory
implementations of the stream contract for unit tests of the worker loop only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from sqlalchemy.orm import Session, sessionmaker

from classifier.model.artifact import load_artifact
from classifier.model.serving import ServingModel, artifact_directory
from storage.db.tables import ModelVersion
from storage.stream.contract import Record, TopicPartition
from storage.stream.events import InstanceEvent

TINY_SIZE = 32
T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def make_tiny_artifact(directory: Path, version: str, seed: int) -> tuple[str, str]:
    """A real 32x32 model with random weights saved as an artifact; returns (directory, sha256)."""
    import keras

    from classifier.model.artifact import save_artifact
    from classifier.model.network import build_model

    keras.utils.set_random_seed(seed)
    model = build_model(image_size=TINY_SIZE, weights=None)
    card = save_artifact(model, directory, {"version": version, "metrics": {"macro_f1": 0.5}})
    return str(directory), card.weights_sha256


def register(
    sessions: sessionmaker[Session], *, version: str, directory: str, sha256: str, active: bool
) -> int:
    """Register an artifact as a model version through the storage functions; returns its id."""
    from classifier.model.artifact import read_card
    from storage.db.model_versions import activate_model_version, register_model_version

    card = read_card(directory)
    with sessions.begin() as session:
        row = register_model_version(
            session,
            version=version,
            artifact_uri=directory,
            sha256=sha256,
            card={"image_size": card.image_size},
            metrics=card.metrics,
            manifest_hash=None,
            now=T0,
        )
        if active:
            activate_model_version(session, version=version, now=T0)
        return row.id


def write_instance(
    archive_dir: Path,
    *,
    study: str | None = None,
    series: str | None = None,
    source: str = "CT_small.dcm",
    accession: str | None = "ACC123",
    received_at: dt.datetime = T0,
    modality: str | None = None,
) -> InstanceEvent:
    """Copy a real pydicom-data file under new UIDs into the archive; return its instance event."""
    ds = pydicom.dcmread(get_testdata_file(source))
    study = study or generate_uid()
    series = series or generate_uid()
    sop = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    if accession is not None:
        ds.AccessionNumber = accession
    if modality is not None:
        ds.Modality = modality
    path = archive_dir / study / series / f"{sop}.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    return InstanceEvent(
        study_instance_uid=study,
        series_instance_uid=series,
        sop_instance_uid=sop,
        sop_class_uid=str(ds.get("SOPClassUID") or ds.file_meta.MediaStorageSOPClassUID),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        modality=str(ds.get("Modality")),
        archive_uri=path.as_uri(),
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        calling_ae="TESTSCU",
        received_at=received_at,
        instance_number=int(ds.get("InstanceNumber", 1) or 1),
        number_of_frames=int(ds.get("NumberOfFrames", 1) or 1),
    )


def wait_for(condition: Callable[[], bool], timeout_s: float = 180.0, interval_s: float = 0.05) -> None:
    """Poll `condition` until it holds; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


class MemoryConsumer:
    """The `Consumer` contract over an in-memory log (unit tests of the loop only)."""

    def __init__(self, topic: str = "instances") -> None:
        self.topic = topic
        self.log: list[bytes] = []
        self.position = 0
        self.committed: dict[TopicPartition, int] = {}
        self.closed = False
        self._cond = threading.Condition()

    def append(self, value: bytes) -> None:
        with self._cond:
            self.log.append(value)
            self._cond.notify_all()

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        with self._cond:
            if self.position >= len(self.log):
                self._cond.wait(timeout_s)
            out = [
                Record(self.topic, 0, i, b"k", self.log[i])
                for i in range(self.position, min(len(self.log), self.position + max_records))
            ]
            self.position += len(out)
            return out

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.committed.update(offsets)

    def backlog(self) -> int | None:
        with self._cond:
            return len(self.log) - self.position

    def rewind_to_committed(self) -> None:
        self.position = self.committed.get(TopicPartition(self.topic, 0), 0)

    def close(self) -> None:
        self.closed = True


class MemoryPublisher:
    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes, bytes]] = []

    def publish(self, topic: str, key: bytes, value: bytes) -> None:
        self.messages.append((topic, key, value))

    def on(self, topic: str) -> list[bytes]:
        return [v for t, _, v in self.messages if t == topic]

    def close(self) -> None:
        pass


def caching_loader() -> Callable[[ModelVersion], ServingModel]:
    """A worker `load_model` that loads each artifact once through the real load_artifact (tracing costs seconds)."""
    cache: dict[str, tuple[object, object]] = {}

    def load(row: ModelVersion) -> ServingModel:
        if row.artifact_uri not in cache:
            cache[row.artifact_uri] = load_artifact(
                artifact_directory(row.artifact_uri), expected_sha256=row.sha256
            )
        model, card = cache[row.artifact_uri]
        return ServingModel(row.id, row.version, model, card)  # type: ignore[arg-type]

    return load
