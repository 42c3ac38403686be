"""The worker's statements: calibrated probabilities, shift flags per slice, and a study of images that
are not kidney CT (noise, a bright disc phantom) reported as indeterminate, in SQL, the announcement and metrics."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from classifier_kit import T0, MemoryConsumer, MemoryPublisher, register, wait_for
from prometheus_client import CollectorRegistry
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

import migrations
from classifier.model.artifact import load_artifact, save_artifact
from classifier.model.calibration import apply_temperature
from classifier.model.network import build_model
from classifier.model.preprocess import dicom_to_frames, to_model_input
from classifier.model.serving import feature_scorer, load_serving_model
from classifier.model.shift import SHIFT_FILE, fit_shift_stats
from classifier.study.policy import REASON_SHIFT
from classifier.study.rule import StudyRule
from classifier.worker.batching import BatchPolicy
from classifier.worker.loop import Worker, WorkerConfig
from classifier.worker.metrics import WorkerMetrics
from common.files import sha256_file
from storage.archive.reader import ArchiveReader
from storage.db.engine import make_engine, make_session_factory
from storage.db.tables import Prediction
from storage.stream.events import InstanceEvent

TEMPERATURE = 2.0


def _ct_variants(n: int) -> list[pydicom.Dataset]:
    """CT_small with small intensity changes: the 'training' distribution."""
    out = []
    for i in range(n):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        pixels = ds.pixel_array.astype(np.int16) + np.int16(5 * i)
        ds.PixelData = pixels.tobytes()
        out.append(ds)
    return out


def _foreign(kind: str, seed: int) -> pydicom.Dataset:
    """Not kidney CT: uniform noise over the whole HU range, or a bright disc on air."""
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    rng = np.random.default_rng(seed)
    if kind == "noise":
        pixels = rng.integers(0, 3000, size=(ds.Rows, ds.Columns)).astype(np.int16)
    else:
        yy, xx = np.mgrid[: ds.Rows, : ds.Columns]
        disc = (yy - 64) ** 2 + (xx - 64) ** 2 <= (20 + seed) ** 2
        pixels = np.where(disc, 3000, 0).astype(np.int16)
    ds.PixelData = pixels.tobytes()
    return ds


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A tiny model with a temperature, a rule and a shift detector fitted on CT_small-like slices."""
    import keras

    directory = tmp_path_factory.mktemp("statements") / "v1"
    directory.mkdir()
    keras.utils.set_random_seed(5)
    model = build_model(image_size=32, weights=None)
    inputs = np.concatenate([to_model_input(dicom_to_frames(ds), 32) for ds in _ct_variants(12)])
    _, features = feature_scorer(model).predict(inputs, verbose=0)
    stats = fit_shift_stats(np.asarray(features), np.arange(12) % 4, 4)
    stats.save(directory / SHIFT_FILE)
    threshold = float(stats.scores(np.asarray(features)).max() * 2.0)
    card = save_artifact(
        model,
        directory,
        {
            "version": "v1",
            "calibration": {"temperature": TEMPERATURE},
            "decision": {
                "study_rule": {"k": 1, "t": 0.0},
                "abstention": {"min_evidence": 0.0, "target_accuracy": 0.9},
                "shift": {
                    "file": SHIFT_FILE,
                    "sha256": sha256_file(directory / SHIFT_FILE),
                    "threshold": threshold,
                },
            },
        },
    )
    return str(directory), card.weights_sha256


def _event(archive: Path, ds: pydicom.Dataset, study: str) -> InstanceEvent:
    series, sop = generate_uid(), generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    path = archive / study / f"{sop}.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    return InstanceEvent(
        study_instance_uid=study,
        series_instance_uid=series,
        sop_instance_uid=sop,
        sop_class_uid=str(ds.SOPClassUID),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        modality="CT",
        archive_uri=path.as_uri(),
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        calling_ae="TESTSCU",
        received_at=T0,
        instance_number=1,
        number_of_frames=1,
    )


@pytest.fixture
def sessions(sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    migrations.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    yield make_session_factory(engine)
    engine.dispose()


def test_non_ct_images_are_flagged_and_their_study_is_indeterminate(
    sessions: sessionmaker[Session], artifact: tuple[str, str], tmp_path: Path
) -> None:
    """CT slices: calibrated, not flagged, answered. Noise and phantom slices: flagged; their study's label is
    NULL with the reason in study_results, announced without a label, and counted in Prometheus."""
    directory, sha = artifact
    register(sessions, version="v1", directory=directory, sha256=sha, active=True)
    with sessions.begin() as s:  # the registry's real card (the kit stores only the input size)
        s.execute(
            text("UPDATE model_versions SET card = :c"),
            {"c": json.dumps(load_artifact(directory)[1].__dict__)},
        )
    archive, consumer, publisher = tmp_path / "archive", MemoryConsumer(), MemoryPublisher()
    metrics = WorkerMetrics(CollectorRegistry())
    now = [T0 + dt.timedelta(seconds=1)]
    worker = Worker(
        consumer=consumer,
        publisher=publisher,
        session_factory=sessions,
        config=WorkerConfig(
            archive=ArchiveReader(archive),
            topic_results="results",
            topic_dead_letter="dlq",
            batch=BatchPolicy(max_size=8, max_wait_s=0.02, idle_wait_s=0.05),
            rule=StudyRule(2, 0.5),
            model_poll_s=3600.0,
            sweep_interval_s=3600.0,
        ),
        metrics=metrics,
        load_model=load_serving_model,
        utcnow=lambda: now[0],
    )
    ct = [_event(archive, ds, "1.2.3.1") for ds in _ct_variants(3)]
    foreign = [
        _event(archive, _foreign(kind, i), "1.2.3.2") for i, kind in enumerate(("noise", "disc", "noise"))
    ]
    for e in ct + foreign:
        consumer.append(e.to_json())
    worker.start()
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    wait_for(lambda: consumer.committed and sum(consumer.committed.values()) == 6)
    now[0] = T0 + dt.timedelta(seconds=120)
    assert worker.sweep_completed_studies() == 2
    worker.request_stop()
    thread.join(timeout=60)

    with sessions() as s:
        rows = {r.instance_id: r for r in s.scalars(select(Prediction))}
        by_study = dict(s.execute(text("SELECT study_instance_uid, label FROM study_results")).all())
        reasons = dict(
            s.execute(text("SELECT study_instance_uid, indeterminate_reason FROM study_results")).all()
        )
        flags = dict(s.execute(text("SELECT sop_instance_uid, shifted FROM instance_results")).all())
    assert all(r.shift_score is not None for r in rows.values())
    assert [bool(flags[e.sop_instance_uid]) for e in ct] == [False] * 3
    assert [bool(flags[e.sop_instance_uid]) for e in foreign] == [True] * 3
    assert by_study["1.2.3.1"] is not None and reasons["1.2.3.1"] is None
    assert by_study["1.2.3.2"] is None and reasons["1.2.3.2"] == REASON_SHIFT
    # The stored probabilities are the calibrated ones.
    model, _ = load_artifact(directory)
    raw = np.asarray(model.predict(to_model_input(dicom_to_frames(_ct_variants(1)[0]), 32), verbose=0))
    first = next(r for r in rows.values() if r.instance_id == min(rows))
    np.testing.assert_allclose(
        [first.p_cyst, first.p_normal, first.p_stone, first.p_tumor],
        apply_temperature(raw, TEMPERATURE)[0],
        atol=1e-5,
    )
    announced = {
        m["study_instance_uid"]: m
        for m in map(json.loads, publisher.on("results"))
        if m["type"] == "study_complete"
    }
    assert (
        announced["1.2.3.2"]["label"] is None and announced["1.2.3.2"]["indeterminate_reason"] == REASON_SHIFT
    )
    registry = metrics.registry
    assert registry.get_sample_value("kidneyct_worker_frames_shifted_total") == 3
    assert (
        registry.get_sample_value("kidneyct_worker_studies_indeterminate_total", {"reason": REASON_SHIFT})
        == 1
    )
