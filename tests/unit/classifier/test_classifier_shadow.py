"""Shadow models and reprocess events in the worker loop (SQLite, in-memory stream): one decode per
instance, rows under both versions, and nothing of the non-active model in the clinical path."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

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

import migrations
from classifier.model.serving import ServingModel
from classifier.report.build import ResultConfig
from classifier.study.rule import StudyRule
from classifier.worker.batching import BatchPolicy
from classifier.worker.decoding import Outcome, Preprocessing, decode_event
from classifier.worker.loop import Worker, WorkerConfig
from classifier.worker.metrics import WorkerMetrics
from storage.archive.reader import ArchiveReader
from storage.db.engine import make_engine, make_session_factory
from storage.db.shadow_models import set_shadow
from storage.db.tables import ModelVersion, Prediction, ResultDelivery, ResultReport, StudyPrediction
from storage.stream.contract import Record, TopicPartition
from storage.stream.events import InstanceEvent

RESULTS, DLQ = "results", "dead-letter"
DESTINATION = "PACS@10.0.0.1:104"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    root = tmp_path_factory.mktemp("models")
    return {v: make_tiny_artifact(root / v, v, seed) for v, seed in (("v1", 31), ("v2", 32))}


@pytest.fixture(scope="module")
def loader() -> Callable[[ModelVersion], ServingModel]:
    return caching_loader()


@pytest.fixture
def sessions(sqlite_url: str, artifacts: dict[str, tuple[str, str]]) -> Iterator[sessionmaker[Session]]:
    migrations.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    factory = make_session_factory(engine)
    for version, active in (("v1", True), ("v2", False)):
        directory, sha = artifacts[version]
        register(factory, version=version, directory=directory, sha256=sha, active=active)
    yield factory
    engine.dispose()


class CountingDecoder:
    """The real decoder, counting its calls per SOP Instance UID."""

    def __init__(self) -> None:
        self.calls: dict[int, int] = {}
        self._lock = threading.Lock()

    def __call__(
        self, record: Record, event: InstanceEvent, preprocessing: Preprocessing, reader: ArchiveReader
    ) -> Outcome:
        with self._lock:
            self.calls[record.offset] = self.calls.get(record.offset, 0) + 1
        return decode_event(record, event, preprocessing, reader)


class Run:
    def __init__(self, sessions: sessionmaker[Session], loader, archive: Path) -> None:
        self.sessions = sessions
        self.archive = archive
        self.consumer = MemoryConsumer()
        self.publisher = MemoryPublisher()
        self.decoder = CountingDecoder()
        self.metrics = WorkerMetrics(CollectorRegistry())
        self.now = T0 + dt.timedelta(seconds=1)
        self.worker = Worker(
            consumer=self.consumer,
            publisher=self.publisher,
            session_factory=sessions,
            config=WorkerConfig(
                archive=ArchiveReader(archive),
                topic_results=RESULTS,
                topic_dead_letter=DLQ,
                batch=BatchPolicy(max_size=4, max_wait_s=0.02, idle_wait_s=0.05),
                rule=StudyRule(min_slices=1, min_probability=0.0),
                model_poll_s=0.0,
                sweep_interval_s=3600.0,
                retry_initial_s=0.05,
                results=ResultConfig(destinations=(DESTINATION,), heatmap="none"),
            ),
            metrics=self.metrics,
            load_model=loader,
            utcnow=lambda: self.now,
            decode=self.decoder,
        )
        self.worker.start()
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()

    def committed(self) -> int:
        return self.consumer.committed.get(TopicPartition(self.consumer.topic, 0), 0)

    def stop(self) -> None:
        self.worker.request_stop()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()

    def rows(self, version: str) -> int:
        with self.sessions() as s:
            return int(
                s.scalar(
                    select(func.count())
                    .select_from(Prediction)
                    .join(ModelVersion, ModelVersion.id == Prediction.model_version_id)
                    .where(ModelVersion.version == version)
                )
                or 0
            )

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def run(sessions, loader, tmp_path: Path) -> Iterator[Callable[[], Run]]:
    made: list[Run] = []

    def make() -> Run:
        made.append(Run(sessions, loader, tmp_path / "archive"))
        return made[-1]

    yield make
    for r in made:
        if r.thread.is_alive():
            r.stop()


def test_shadow_one_decode_rows_under_both_never_clinical(sessions, run) -> None:
    """v2 shadowing v1: each instance decoded once, a row under each version; v2 never in the results
    topic, never the active study label, never a report or an outbox row; its study completes quietly."""
    with sessions.begin() as s:
        set_shadow(s, version="v2", on=True)
    r = run()
    study = "1.2.826.0.1.3680043.8.498.501"
    events = [write_instance(r.archive, study=study, received_at=T0) for _ in range(3)]
    for e in events:
        r.consumer.append(e.to_json())
    wait_for(lambda: r.committed() == 3)
    assert r.rows("v1") == 3 and r.rows("v2") == 3
    assert r.decoder.calls == {0: 1, 1: 1, 2: 1}  # one decode per instance, two predictions
    assert r.sample("kidneyct_worker_decodes_total") == 3
    assert r.sample("kidneyct_worker_version_frames_predicted_total", model_version="v2", role="shadow") == 3

    r.now = T0 + dt.timedelta(seconds=120)
    assert r.worker.sweep_completed_studies() == 2  # v1's announced, v2's completed quietly
    r.stop()
    messages = [json.loads(v) for v in r.publisher.on(RESULTS)]
    assert {m["model_version"] for m in messages} == {"v1"}
    assert sorted(m["type"] for m in messages) == ["instance_result"] * 3 + ["study_complete"]
    with sessions() as s:
        reports = s.execute(
            select(ModelVersion.version).join(ResultReport, ResultReport.model_version_id == ModelVersion.id)
        ).all()
        assert [v for (v,) in reports] == ["v1"]
        assert s.scalar(select(func.count()).select_from(ResultDelivery)) >= 1  # v1's SR, for the PACS
        shadow = {
            v: (sp.shadow, sp.complete)
            for sp, v in s.execute(
                select(StudyPrediction, ModelVersion.version).join(
                    ModelVersion, ModelVersion.id == StudyPrediction.model_version_id
                )
            )
        }
        assert shadow == {"v1": (False, True), "v2": (True, True)}
        active = s.execute(text("SELECT model_version FROM study_results WHERE from_active_model = 1")).all()
        assert [v for (v,) in active] == ["v1"]


def test_shadow_turned_off_stops_its_rows(sessions, run) -> None:
    """`--off`: the worker drops the shadow at its next poll; later instances get v1 rows only."""
    with sessions.begin() as s:
        set_shadow(s, version="v2", on=True)
    r = run()
    first = write_instance(r.archive)
    r.consumer.append(first.to_json())
    wait_for(lambda: r.committed() == 1)
    with sessions.begin() as s:
        set_shadow(s, version="v2", on=False)
    wait_for(lambda: not r.worker._others.shadows)  # noqa: SLF001 - the poll's effect
    r.consumer.append(write_instance(r.archive).to_json())
    wait_for(lambda: r.committed() == 2)
    r.stop()
    assert r.rows("v1") == 2 and r.rows("v2") == 1


def test_reprocess_event_under_a_candidate_stays_out_of_the_clinical_path(sessions, run) -> None:
    """A reprocess event for v2 (not active) gets v2 rows only: v1's rows and study label are unchanged,
    nothing is published for v2; the same event again adds nothing; an unknown version is dead-lettered."""
    r = run()
    study = "1.2.826.0.1.3680043.8.498.502"
    events = [write_instance(r.archive, study=study, received_at=T0) for _ in range(2)]
    for e in events:
        r.consumer.append(e.to_json())
    wait_for(lambda: r.committed() == 2)
    with sessions() as s:
        before = s.execute(select(StudyPrediction.label, StudyPrediction.updated_at)).all()
    published = len(r.publisher.messages)
    for _ in range(2):
        for e in events:
            r.consumer.append(e.reprocessed_under("v2").to_json())
    r.consumer.append(events[0].reprocessed_under("nope").to_json())
    wait_for(lambda: r.committed() == 7)
    r.stop()
    assert r.rows("v1") == 2 and r.rows("v2") == 2
    assert r.decoder.calls[2] == 1  # the reprocess event was decoded once (same preprocessing)
    with sessions() as s:
        v1 = s.execute(
            select(StudyPrediction.label, StudyPrediction.updated_at)
            .join(ModelVersion, ModelVersion.id == StudyPrediction.model_version_id)
            .where(ModelVersion.version == "v1")
        ).all()
        assert v1 == before
        v2 = s.scalars(
            select(StudyPrediction.shadow)
            .join(ModelVersion, ModelVersion.id == StudyPrediction.model_version_id)
            .where(ModelVersion.version == "v2")
        ).all()
        assert v2 == [True]
    later = r.publisher.messages[published:]
    assert [t for t, _, _ in later] == [DLQ]
    assert "no model version 'nope'" in json.loads(later[0][2])["reason"]
