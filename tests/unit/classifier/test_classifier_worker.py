"""The worker loop on the embedded SQLite database with an in-memory stream (integration tests
run the same against real Kafka and PostgreSQL)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from classifier_kit import (
    T0,
    MemoryConsumer,
    MemoryPublisher,
    caching_loader,
    make_tiny_artifact,
    register,
    wait_for,
    write_instance,
)
from prometheus_client import CollectorRegistry
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker
from structlog.testing import capture_logs

import migrations
from classifier.model.serving import ServingModel
from classifier.report.build import ResultConfig
from classifier.study.rule import StudyRule
from classifier.worker.batching import BatchPolicy
from classifier.worker.dead_letter_limit import DeadLetterLimit
from classifier.worker.errors import DeadLetterLimitExceeded, NoActiveModel
from classifier.worker.loop import Worker, WorkerConfig
from classifier.worker.metrics import WorkerMetrics
from common.errors import SchemaMissing
from storage.archive.reader import ArchiveReader, ArchiveUnavailable
from storage.db.engine import make_engine, make_session_factory
from storage.db.model_versions import activate_model_version
from storage.db.results import incomplete_studies, mark_study_complete
from storage.db.tables import Instance, ModelVersion, Prediction, QueueMessage, Study, StudyPrediction
from storage.stream.contract import Publisher, TopicPartition
from storage.stream.db_queue import DatabaseQueuePublisher

RESULTS, DLQ = "results", "dead-letter"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    root = tmp_path_factory.mktemp("models")
    return {v: make_tiny_artifact(root / v, v, seed) for v, seed in (("v1", 1), ("v2", 2))}


@pytest.fixture(scope="module")
def loader() -> Callable[[ModelVersion], ServingModel]:
    """Each artifact loaded once per module."""
    return caching_loader()


@pytest.fixture
def sessions(sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    migrations.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    yield make_session_factory(engine)
    engine.dispose()


class Harness:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        loader,
        folder: Path,
        publisher: Publisher | None = None,
        **overrides: object,
    ) -> None:
        self.sessions = sessions
        self.consumer = MemoryConsumer()
        self.publisher = publisher or MemoryPublisher()
        self.archive = folder
        self.now = T0 + dt.timedelta(seconds=1)
        settings: dict[str, object] = {
            "archive": ArchiveReader(folder),
            "topic_results": RESULTS,
            "topic_dead_letter": DLQ,
            "batch": BatchPolicy(max_size=4, max_wait_s=0.02, idle_wait_s=0.05),
            "rule": StudyRule(min_slices=1, min_probability=0.0),
            "stable_age_s": 60.0,
            "model_poll_s": 0.0,
            "sweep_interval_s": 3600.0,
            "retry_initial_s": 0.05,
        }
        settings.update(overrides)
        self.metrics = WorkerMetrics(CollectorRegistry())
        self.worker = Worker(
            consumer=self.consumer,
            publisher=self.publisher,
            session_factory=sessions,
            config=WorkerConfig(**settings),  # type: ignore[arg-type]
            metrics=self.metrics,
            load_model=loader,
            utcnow=lambda: self.now,
        )
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.worker.start()
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.worker.request_stop()
        assert self.thread is not None
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()

    def committed(self) -> int:
        return self.consumer.committed.get(TopicPartition(self.consumer.topic, 0), 0)

    def count(self, model: type) -> int:
        with self.sessions() as s:
            return int(s.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture
def harness(sessions, loader, artifacts, tmp_path: Path) -> Iterator[Harness]:
    for version, active in (("v1", True), ("v2", False)):
        directory, sha = artifacts[version]
        register(sessions, version=version, directory=directory, sha256=sha, active=active)
    h = Harness(sessions, loader, tmp_path / "archive")
    yield h
    if h.thread is not None and h.thread.is_alive():
        h.stop()


def test_events_become_instances_predictions_and_results(harness: Harness) -> None:
    """Six CT events: six processed instances, six predictions, six results, all offsets committed."""
    study = "1.2.3.4"
    events = [write_instance(harness.archive, study=study, accession="ACC9") for _ in range(6)]
    harness.start()
    for e in events:
        harness.consumer.append(e.to_json())
    wait_for(lambda: harness.committed() == 6)
    harness.stop()
    assert harness.count(Prediction) == 6
    with harness.sessions() as s:
        assert set(s.scalars(select(Instance.state))) == {"processed"}
        assert s.scalars(select(Study.accession_number)).one() == "ACC9"
        sp = s.scalars(select(StudyPrediction)).one()
        assert sp.n_instances == 6 and sp.n_cyst + sp.n_normal + sp.n_stone + sp.n_tumor == 6
    results = [json.loads(v) for v in harness.publisher.on(RESULTS)]
    assert sorted(r["sop_instance_uid"] for r in results) == sorted(e.sop_instance_uid for e in events)
    assert all("ACC9" not in v.decode() for v in harness.publisher.on(RESULTS))


def test_redelivered_events_make_no_second_row(harness: Harness) -> None:
    """Delivering the same events twice leaves exactly the rows of one delivery."""
    events = [write_instance(harness.archive) for _ in range(5)]
    for e in events:
        harness.consumer.append(e.to_json())
    harness.start()
    wait_for(lambda: harness.committed() == 5)
    with harness.sessions() as s:
        before = sorted(s.execute(select(Prediction.instance_id, Prediction.frame, Prediction.p_cyst)).all())
    for e in events:  # the broker re-delivers every event
        harness.consumer.append(e.to_json())
    wait_for(lambda: harness.committed() == 10)
    harness.stop()
    with harness.sessions() as s:
        after = sorted(s.execute(select(Prediction.instance_id, Prediction.frame, Prediction.p_cyst)).all())
    assert after == before and len(after) == 5
    assert harness.count(Instance) == 5


def test_poison_goes_to_dead_letter_and_the_next_event_is_processed(harness: Harness) -> None:
    """Garbage, a missing file and an MR are recorded and dead-lettered; the CT after them is processed."""
    missing = write_instance(harness.archive)
    Path(missing.archive_uri.removeprefix("file://")).unlink()
    mr = write_instance(harness.archive, source="MR_small.dcm")
    good = write_instance(harness.archive)
    with capture_logs() as logs:
        harness.start()
        for value in (b"not json", missing.to_json(), mr.to_json(), good.to_json()):
            harness.consumer.append(value)
        wait_for(lambda: harness.committed() == 4)
        harness.stop()
    with harness.sessions() as s:
        states = dict(s.execute(select(Instance.sop_instance_uid, Instance.state)).all())
        reasons = dict(s.execute(select(Instance.sop_instance_uid, Instance.state_reason)).all())
    assert states == {
        missing.sop_instance_uid: "failed",
        mr.sop_instance_uid: "skipped",
        good.sop_instance_uid: "processed",
    }
    assert "ArchiveFileMissing" in reasons[missing.sop_instance_uid]
    assert "NotClassifiable" in reasons[mr.sop_instance_uid]
    dead = [json.loads(v) for v in harness.publisher.on(DLQ)]
    assert [d["source"]["offset"] for d in dead] == [0, 1, 2]
    assert "InvalidEventError" in dead[0]["reason"]
    assert harness.count(Prediction) == 1
    assert sum(1 for entry in logs if entry["event"] == "instance_poisoned") == 3


def test_metrics_count_events_frames_and_poison(harness: Harness) -> None:
    """The Prometheus counters follow what the worker wrote: events, frames, poisoned by state."""
    good = [write_instance(harness.archive) for _ in range(3)]
    harness.start()
    for value in (b"not json", *(e.to_json() for e in good)):
        harness.consumer.append(value)
    wait_for(lambda: harness.committed() == 4)
    harness.stop()
    registry = harness.metrics.registry
    assert registry.get_sample_value("kidneyct_worker_events_total") == 4
    assert registry.get_sample_value("kidneyct_worker_frames_predicted_total") == 3
    assert registry.get_sample_value("kidneyct_worker_instances_poisoned_total", {"state": "failed"}) == 1
    assert registry.get_sample_value("kidneyct_worker_model_loads_total") == 1
    assert (registry.get_sample_value("kidneyct_worker_predict_seconds_count") or 0) >= 1


def test_metrics_time_store_to_prediction_and_name_the_model(harness: Harness) -> None:
    """The latency histogram counts each predicted instance from its received_at; the model info names it."""
    events = [
        write_instance(harness.archive, received_at=harness.now - dt.timedelta(seconds=2)) for _ in range(3)
    ]
    harness.start()
    for e in events:
        harness.consumer.append(e.to_json())
    wait_for(lambda: harness.committed() == 3)
    harness.stop()
    registry = harness.metrics.registry
    assert registry.get_sample_value("kidneyct_worker_store_to_prediction_seconds_count") == 3
    assert registry.get_sample_value("kidneyct_worker_store_to_prediction_seconds_sum") == pytest.approx(6.0)
    assert registry.get_sample_value("kidneyct_worker_store_to_prediction_seconds_bucket", {"le": "1.0"}) == 0
    assert registry.get_sample_value("kidneyct_worker_store_to_prediction_seconds_bucket", {"le": "2.5"}) == 3
    assert registry.get_sample_value("kidneyct_worker_model_info", {"version": "v1", "image_size": "32"}) == 1


def test_multiframe_instance_gives_one_row_per_frame(harness: Harness) -> None:
    """The two-frame enhanced CT gives predictions for frames 0 and 1."""
    event = write_instance(harness.archive, source="eCT_Supplemental.dcm")
    harness.consumer.append(event.to_json())
    harness.start()
    wait_for(lambda: harness.committed() == 1)
    harness.stop()
    with harness.sessions() as s:
        assert sorted(s.scalars(select(Prediction.frame))) == [0, 1]
        assert s.scalars(select(Instance.number_of_frames)).one() == 2
    assert len(json.loads(harness.publisher.on(RESULTS)[0])["frames"]) == 2


def test_worker_refuses_to_start_without_an_active_model(sessions, loader, tmp_path: Path) -> None:
    """No active model version: a clear NoActiveModel naming what to do."""
    h = Harness(sessions, loader, tmp_path)
    with pytest.raises(NoActiveModel, match="models promote"):
        h.worker.start()


def test_model_switch_between_batches(harness: Harness) -> None:
    """After v2 becomes active, the next batch is predicted by v2; no event gets both versions."""
    first = [write_instance(harness.archive) for _ in range(3)]
    harness.start()
    for e in first:
        harness.consumer.append(e.to_json())
    wait_for(lambda: harness.committed() == 3)
    with harness.sessions.begin() as s:
        activate_model_version(s, version="v2", now=T0)
    wait_for(lambda: harness.worker.serving.version == "v2")
    info = {"version": "v2", "image_size": "32"}
    assert harness.metrics.registry.get_sample_value("kidneyct_worker_model_info", info) == 1
    second = [write_instance(harness.archive) for _ in range(3)]
    for e in second:
        harness.consumer.append(e.to_json())
    wait_for(lambda: harness.committed() == 6)
    harness.stop()
    with harness.sessions() as s:
        rows = s.execute(
            select(Instance.sop_instance_uid, ModelVersion.version)
            .join(Prediction, Prediction.instance_id == Instance.id)
            .join(ModelVersion, Prediction.model_version_id == ModelVersion.id)
        ).all()
    by_uid = dict(rows)
    assert len(rows) == 6
    assert {by_uid[e.sop_instance_uid] for e in first} == {"v1"}
    assert {by_uid[e.sop_instance_uid] for e in second} == {"v2"}


def test_stop_finishes_the_batch_in_hand(harness: Harness) -> None:
    """A stop request returns only after every record already polled is written and committed."""
    for _ in range(8):
        harness.consumer.append(write_instance(harness.archive).to_json())
    harness.start()
    wait_for(lambda: harness.consumer.position > 0, interval_s=0.001)
    harness.stop()
    assert harness.committed() == harness.consumer.position
    assert harness.count(Prediction) == harness.committed()


def test_study_completes_after_stable_age_and_late_instance_reopens(harness: Harness) -> None:
    """Complete after 60 s of quiet, announced; a late instance re-opens and recomputes it."""
    study = "1.2.3.99"
    for _ in range(2):
        harness.consumer.append(write_instance(harness.archive, study=study, received_at=T0).to_json())
    harness.start()
    wait_for(lambda: harness.committed() == 2)
    harness.now = T0 + dt.timedelta(seconds=30)
    assert harness.worker.sweep_completed_studies() == 0
    harness.now = T0 + dt.timedelta(seconds=62)
    assert harness.worker.sweep_completed_studies() == 1
    with harness.sessions() as s:
        sp = s.scalars(select(StudyPrediction)).one()
        assert sp.complete and sp.n_instances == 2
    done = [json.loads(v) for v in harness.publisher.on(RESULTS) if b"study_complete" in v]
    assert len(done) == 1 and done[0]["study_instance_uid"] == study and done[0]["n_instances"] == 2

    harness.now = T0 + dt.timedelta(seconds=100)
    late = write_instance(harness.archive, study=study, received_at=T0 + dt.timedelta(seconds=99))
    harness.consumer.append(late.to_json())
    wait_for(lambda: harness.committed() == 3)
    with harness.sessions() as s:
        sp = s.scalars(select(StudyPrediction)).one()
        assert not sp.complete and sp.n_instances == 3
    harness.now = T0 + dt.timedelta(seconds=158)
    assert harness.worker.sweep_completed_studies() == 0  # 59 s after the late one
    harness.now = T0 + dt.timedelta(seconds=161)
    assert harness.worker.sweep_completed_studies() == 1
    harness.stop()
    done = [json.loads(v) for v in harness.publisher.on(RESULTS) if b"study_complete" in v]
    assert [d["n_instances"] for d in done] == [2, 3]
    assert [d["revision"] for d in done] == [1, 2]  # the re-opened study's second completion
    assert {d["accession_number"] for d in done} == {"ACC123"}


def _complete_one_study(h: Harness, study: str) -> None:
    for _ in range(2):
        h.consumer.append(write_instance(h.archive, study=study, received_at=T0).to_json())
    h.start()
    wait_for(lambda: h.committed() == 2)


def test_a_completed_study_queues_its_sr_and_heat_map_for_each_destination(
    sessions, loader, artifacts, tmp_path: Path
) -> None:
    """Completion writes the report revision, its SR and Secondary Capture, and one outbox row per
    object and destination, in the transaction that marks the study complete."""
    directory, sha = artifacts["v1"]
    register(sessions, version="v1", directory=directory, sha256=sha, active=True)
    destinations = ("PACS@10.0.0.1:104", "VNA@10.0.0.2:11112")
    h = Harness(
        sessions, loader, tmp_path / "archive", results=ResultConfig(destinations=destinations, heatmap="sc")
    )
    _complete_one_study(h, "1.2.3.77")
    h.now = T0 + dt.timedelta(seconds=62)
    assert h.worker.sweep_completed_studies() == 1
    h.stop()
    with h.sessions() as s:
        reports = s.execute(text("SELECT revision, label, build_error, key_slices FROM result_reports")).all()
        kinds = sorted(s.scalars(text("SELECT kind FROM result_objects")))
        deliveries = s.execute(text("SELECT destination, state FROM result_deliveries")).all()
        row = s.execute(text("SELECT delivery_state, revision, key_slices FROM study_results")).one()
    assert len(reports) == 1 and reports[0][0] == 1 and reports[0][2] is None
    assert kinds == ["sc", "sr"]  # k = 1 key slice in this harness
    assert sorted(deliveries) == sorted((d, "pending") for d in destinations for _ in kinds)
    assert tuple(row) == ("pending", 1, reports[0][3])


def test_a_report_that_cannot_be_built_is_recorded_and_the_study_still_completes(
    sessions, loader, artifacts, tmp_path: Path
) -> None:
    """A key slice gone from the archive: the study completes, its report says why nothing was built."""
    directory, sha = artifacts["v1"]
    register(sessions, version="v1", directory=directory, sha256=sha, active=True)
    h = Harness(sessions, loader, tmp_path / "archive", results=ResultConfig(destinations=("PACS@h:104",)))
    _complete_one_study(h, "1.2.3.78")
    for path in h.archive.rglob("*.dcm"):
        path.unlink()
    h.now = T0 + dt.timedelta(seconds=62)
    with capture_logs() as logs:
        assert h.worker.sweep_completed_studies() == 1
    h.stop()
    with h.sessions() as s:
        error = s.scalar(text("SELECT build_error FROM result_reports"))
        state = s.scalar(text("SELECT delivery_state FROM study_results"))
        n_objects = s.scalar(text("SELECT COUNT(*) FROM result_objects"))
    assert error and "FileNotFoundError" in error and state == "build_failed" and n_objects == 0
    failed = [e for e in logs if e["event"] == "result_build_failed"]
    assert (
        failed and failed[0]["error"] == "FileNotFoundError" and failed[0]["study_instance_uid"] == "1.2.3.78"
    )


def test_sweep_on_the_embedded_queue_announces_without_lock_fights(
    sessions, loader, artifacts, tmp_path
) -> None:
    """With the SQLite queue as results publisher, a sweep announces and marks the study complete
    (no transaction of the sweep is open while it publishes into the same file)."""
    directory, sha = artifacts["v1"]
    register(sessions, version="v1", directory=directory, sha256=sha, active=True)
    # The embedded default's results publisher, on the same SQLite file.
    h = Harness(sessions, loader, tmp_path / "archive", publisher=DatabaseQueuePublisher(sessions))
    for study in ("1.2.3.5", "1.2.3.6"):  # two: a write for the first must not block publishing the second
        h.consumer.append(write_instance(h.archive, study=study, received_at=T0).to_json())
    h.start()
    wait_for(lambda: h.committed() == 2)
    h.now = T0 + dt.timedelta(seconds=61)
    assert h.worker.sweep_completed_studies() == 2
    h.stop()
    with sessions() as s:
        assert list(s.scalars(select(StudyPrediction.complete))) == [True, True]
        values = list(s.scalars(select(QueueMessage.value).where(QueueMessage.topic == RESULTS)))
    assert sorted(json.loads(v)["type"] for v in values) == ["instance_result"] * 2 + ["study_complete"] * 2


def test_a_study_reopened_after_the_sweep_read_it_is_not_marked(harness: Harness) -> None:
    """Marking checks the result is unchanged since it was read; a recompute in between wins."""
    harness.consumer.append(write_instance(harness.archive, received_at=T0).to_json())
    harness.start()
    wait_for(lambda: harness.committed() == 1)
    harness.stop()
    with harness.sessions.begin() as s:
        candidate = incomplete_studies(s, cutoff=T0 + dt.timedelta(seconds=5))[0]
        stale = candidate.updated_at - dt.timedelta(seconds=1)
        assert not mark_study_complete(
            s, study_prediction_id=candidate.study_prediction_id, expected_updated_at=stale, now=T0
        )
        assert mark_study_complete(
            s,
            study_prediction_id=candidate.study_prediction_id,
            expected_updated_at=candidate.updated_at,
            now=T0,
        )


def test_event_whose_file_is_missing_is_failed_and_the_senders_retry_is_processed(harness: Harness) -> None:
    """Ingest answered failure after the event went out (file gone): failed; the retry's event: processed."""
    event = write_instance(harness.archive)
    archived = Path(event.archive_uri.removeprefix("file://"))
    kept = archived.with_suffix(".kept")
    archived.rename(kept)  # as after a crash before the archive's directory fsync
    harness.start()
    harness.consumer.append(event.to_json())
    wait_for(lambda: harness.committed() == 1)
    with harness.sessions() as s:
        assert (
            s.scalar(select(Instance.state).where(Instance.sop_instance_uid == event.sop_instance_uid))
            == "failed"
        )
    kept.rename(archived)  # the sender's retry archives the instance again and re-publishes
    harness.consumer.append(event.to_json())
    wait_for(lambda: harness.committed() == 2)
    harness.stop()
    with harness.sessions() as s:
        state = s.scalar(select(Instance.state).where(Instance.sop_instance_uid == event.sop_instance_uid))
    assert state == "processed"
    assert harness.count(Prediction) == 1


def test_resent_instance_with_other_content_is_classified_again(harness: Harness) -> None:
    """A second event for the same SOP instance with another file (sha256) replaces the first
    predictions; re-delivering either event again adds no row."""
    first = write_instance(harness.archive)
    first_path = Path(first.archive_uri.removeprefix("file://"))
    ds = pydicom.dcmread(first_path)
    ds.PixelData = bytes(len(ds.PixelData))  # other pixels, same UIDs: a black slice
    second_path = first_path.with_name(f"{first.sop_instance_uid}.v2.dcm")
    ds.save_as(second_path)
    data = second_path.read_bytes()
    second = dataclasses.replace(
        first, archive_uri=second_path.as_uri(), sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data)
    )
    harness.start()
    harness.consumer.append(first.to_json())
    wait_for(lambda: harness.committed() == 1)
    with harness.sessions() as s:
        before = s.execute(select(Prediction.p_cyst, Prediction.p_normal)).one()
    with capture_logs() as logs:
        harness.consumer.append(second.to_json())
        wait_for(lambda: harness.committed() == 2)
    harness.consumer.append(second.to_json())  # re-delivery of the same content
    wait_for(lambda: harness.committed() == 3)
    harness.stop()
    with harness.sessions() as s:
        after = s.execute(select(Prediction.p_cyst, Prediction.p_normal)).all()
        instance = s.scalars(select(Instance)).one()
    assert len(after) == 1 and tuple(after[0]) != tuple(before)
    assert instance.sha256 == second.sha256 and instance.archive_uri == second.archive_uri
    assert [e["sop_instance_uid"] for e in logs if e["event"] == "instance_reclassified"] == [
        first.sop_instance_uid
    ]


def test_value_too_large_for_its_column_is_poison_not_an_outage(harness: Harness) -> None:
    """An InstanceNumber beyond 64 bits cannot be written: that event is recorded failed, dead-lettered
    and committed past; the other events of its batch are processed (no endless retry)."""
    good = [write_instance(harness.archive) for _ in range(2)]
    bad = dataclasses.replace(write_instance(harness.archive), instance_number=2**70)
    harness.start()
    for e in (good[0], bad, good[1]):
        harness.consumer.append(e.to_json())
    wait_for(lambda: harness.committed() == 3, timeout_s=60)
    harness.stop()
    with harness.sessions() as s:
        states = dict(s.execute(select(Instance.sop_instance_uid, Instance.state)).tuples().all())
    assert states[bad.sop_instance_uid] == "failed"
    assert all(states[e.sop_instance_uid] == "processed" for e in good)
    assert harness.count(Prediction) == 2
    [letter] = [json.loads(v) for v in harness.publisher.on(DLQ)]
    assert "ValueDoesNotFit" in json.dumps(letter)


def test_database_without_schema_stops_with_db_upgrade_advice(loader, tmp_path: Path) -> None:
    """A database without the schema stops the worker at start with `kidneyct db upgrade`, not a wait."""
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    engine = make_engine(url)
    h = Harness(make_session_factory(engine), loader, tmp_path / "archive")
    raised: list[BaseException] = []

    def start() -> None:
        try:
            h.worker.start()
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            raised.append(exc)

    thread = threading.Thread(target=start, daemon=True)
    thread.start()
    thread.join(timeout=5)
    h.worker.request_stop()  # before the fix it retries forever: let the thread end
    thread.join(timeout=10)
    assert raised and isinstance(raised[0], SchemaMissing), raised
    assert "kidneyct db upgrade" in str(raised[0])
    engine.dispose()


def test_unreadable_archive_stops_the_worker_without_committing(harness: Harness, tmp_path: Path) -> None:
    """When most of the window's events find no archive file (volume not mounted), the worker stops
    with a clear error instead of dead-lettering everything, and commits nothing of that batch."""
    harness.worker._dead_letters = DeadLetterLimit(window=4, ratio=0.5)
    events = [write_instance(harness.archive) for _ in range(4)]
    shutil.rmtree(harness.archive)  # as if the volume were not mounted
    harness.worker.start()
    for e in events:
        harness.consumer.append(e.to_json())
    with capture_logs() as logs, pytest.raises(DeadLetterLimitExceeded, match="mounted"):
        harness.worker.run()
    assert harness.committed() == 0
    assert harness.publisher.on(DLQ) == []
    assert any(e["event"] == "dead_letter_limit_exceeded" for e in logs)


class _FlakyReader(ArchiveReader):
    """An object store that does not answer the first `failures` reads."""

    def __init__(self, archive_dir: Path, failures: int) -> None:
        super().__init__(archive_dir)
        self.failures = failures
        self._flaky_lock = threading.Lock()

    def open(self, uri: str):  # noqa: ANN201 - a context manager, as the parent's
        with self._flaky_lock:
            if self.failures > 0:
                self.failures -= 1
                raise ArchiveUnavailable("object store unavailable: EndpointConnectionError")
        return super().open(uri)


def test_an_object_store_outage_is_waited_out_not_dead_lettered(
    sessions, loader, artifacts, tmp_path: Path
) -> None:
    """Reads that fail because the store does not answer are retried with backoff: every event ends
    processed, none dead-lettered, and the outage counts as a dependency retry."""
    directory, sha = artifacts["v1"]
    register(sessions, version="v1", directory=directory, sha256=sha, active=True)
    archive = tmp_path / "archive"
    reader = _FlakyReader(archive, failures=6)
    harness = Harness(sessions, loader, archive, archive=reader)
    events = [write_instance(archive) for _ in range(4)]
    harness.start()
    for e in events:
        harness.consumer.append(e.to_json())
    wait_for(lambda: harness.committed() == 4)
    harness.stop()
    assert reader.failures == 0
    assert harness.count(Prediction) == 4
    assert harness.publisher.on(DLQ) == []
    assert harness.metrics.dependency_retries.labels(action="read_archive")._value.get() >= 1


def test_an_instance_whose_uid_another_study_has_is_skipped_entirely(harness: Harness) -> None:
    """The same SOP Instance UID later in another study: not predicted, no result message, its offset
    committed, `instance_uid_conflict` logged; the first study keeps its instance and prediction."""
    first = write_instance(harness.archive)
    ds = pydicom.dcmread(Path(first.archive_uri.removeprefix("file://")))
    other_study = pydicom.uid.generate_uid()
    ds.StudyInstanceUID = other_study
    path = harness.archive / other_study / first.series_instance_uid / f"{first.sop_instance_uid}.dcm"
    path.parent.mkdir(parents=True)
    ds.save_as(path)
    data = path.read_bytes()
    second = dataclasses.replace(
        first,
        study_instance_uid=other_study,
        archive_uri=path.as_uri(),
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
    )
    harness.start()
    harness.consumer.append(first.to_json())
    wait_for(lambda: harness.committed() == 1)
    with capture_logs() as logs:
        harness.consumer.append(second.to_json())
        wait_for(lambda: harness.committed() == 2)
    harness.stop()
    conflicts = [e for e in logs if e["event"] == "instance_uid_conflict"]
    assert [(e["study_instance_uid"], e["action"]) for e in conflicts] == [(other_study, "not_classified")]
    assert [e["frames"] for e in logs if e["event"] == "batch_processed"] == [0]
    results = [json.loads(v) for v in harness.publisher.on(RESULTS)]
    assert [r["study_instance_uid"] for r in results if "sop_instance_uid" in r] == [first.study_instance_uid]
    assert harness.publisher.on(DLQ) == []
    assert harness.count(Prediction) == 1
    with harness.sessions() as s:
        assert s.scalars(select(Instance.sha256)).one() == first.sha256


def test_the_next_batch_predicts_while_the_previous_one_is_written_and_offsets_wait_for_the_rows(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer thread writes batch 1 while the worker thread predicts batch 2; nothing is committed
    until batch 1's rows are in, and then every offset is, each instance with one prediction."""
    from classifier.worker import write_step

    release = threading.Event()
    real = write_step.write_batch

    def slow_first_write(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - write_batch's signature
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(write_step, "write_batch", slow_first_write)
    predicts: list[int] = []
    active_predict = harness.worker._predict
    harness.worker._predict = lambda serving, live: (
        predicts.append(len(live)) or active_predict(serving, live)
    )  # type: ignore[method-assign]
    for _ in range(8):
        harness.consumer.append(write_instance(harness.archive).to_json())
    harness.start()
    wait_for(lambda: len(predicts) >= 2)  # batch 2 predicted while batch 1's write is held
    assert harness.committed() == 0 and harness.count(Prediction) == 0
    release.set()
    wait_for(lambda: harness.committed() == 8)
    harness.stop()
    assert harness.count(Prediction) == 8


def test_a_stop_during_a_database_outage_in_the_writer_commits_nothing(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write retries through the outage in the writer thread; a stop then returns at once, the
    batch's offsets uncommitted (re-delivered to the next worker), and says how many records it left."""
    from sqlalchemy.exc import OperationalError

    from classifier.worker import write_step

    def database_down(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - write_batch's signature
        raise OperationalError("INSERT", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(write_step, "write_batch", database_down)
    for _ in range(2):
        harness.consumer.append(write_instance(harness.archive).to_json())
    with capture_logs() as logs:
        harness.start()
        wait_for(lambda: any(e["event"] == "dependency_unavailable" for e in logs))
        harness.stop()
    assert harness.committed() == 0
    stopped = [e for e in logs if e["event"] == "worker_stopped_during_outage"]
    assert stopped and stopped[0]["uncommitted_records"] == 2
