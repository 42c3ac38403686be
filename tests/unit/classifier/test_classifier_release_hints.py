"""Release hints: a study whose association was released completes after the short grace, not the
stable-age timer; a later instance (another association) or no hint leaves it to the timer."""

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
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

import migrations
from classifier.model.serving import ServingModel
from classifier.study.rule import StudyRule, is_complete_after_release
from classifier.worker.batching import BatchPolicy
from classifier.worker.intake import parse_records
from classifier.worker.loop import Worker, WorkerConfig
from classifier.worker.metrics import WorkerMetrics
from classifier.worker.release_hints import ReleasedStudies
from storage.archive.reader import ArchiveReader
from storage.db.engine import make_engine, make_session_factory
from storage.db.tables import ModelVersion, StudyPrediction
from storage.stream.contract import Record, TopicPartition
from storage.stream.events import ReleaseHint

RESULTS, DLQ = "results", "dead-letter"
STUDY = "1.2.3.77"


def hint(study: str, at: dt.datetime) -> bytes:
    return ReleaseHint(study_instance_uid=study, released_at=at.isoformat()).to_json()


@pytest.fixture(scope="module")
def loader(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Callable[[ModelVersion], ServingModel], tuple[str, str]]]:
    yield caching_loader(), make_tiny_artifact(tmp_path_factory.mktemp("models") / "v1", "v1", 1)


class Harness:
    def __init__(self, sqlite_url: str, loader, archive: Path) -> None:  # noqa: ANN001 - the fixture's pair
        load, (directory, sha) = loader
        migrations.upgrade(sqlite_url)
        self.engine = make_engine(sqlite_url)
        self.sessions: sessionmaker[Session] = make_session_factory(self.engine)
        register(self.sessions, version="v1", directory=directory, sha256=sha, active=True)
        self.consumer, self.publisher, self.archive = MemoryConsumer(), MemoryPublisher(), archive
        self.now = T0
        config = WorkerConfig(
            archive=ArchiveReader(archive),
            topic_results=RESULTS,
            topic_dead_letter=DLQ,
            batch=BatchPolicy(max_size=4, max_wait_s=0.02, idle_wait_s=0.05),
            rule=StudyRule(min_slices=1, min_probability=0.0),
            stable_age_s=60.0,
            release_grace_s=3.0,
            model_poll_s=0.0,
            sweep_interval_s=3600.0,
        )
        self.worker = Worker(
            consumer=self.consumer,
            publisher=self.publisher,
            session_factory=self.sessions,
            config=config,
            metrics=WorkerMetrics(CollectorRegistry()),
            load_model=load,
            utcnow=lambda: self.now,
        )
        self.worker.start()
        self.thread = threading.Thread(target=self.worker.run, daemon=True)
        self.thread.start()

    def send(self, *values: bytes) -> None:
        """Append and wait until the worker committed past them (a hint is noted right after)."""
        for v in values:
            self.consumer.append(v)
        wait_for(
            lambda: self.consumer.committed.get(TopicPartition("instances", 0), 0) == len(self.consumer.log)
        )
        wait_for(lambda: self.consumer.position == len(self.consumer.log))

    def sweep_at(self, seconds: float) -> int:
        self.now = T0 + dt.timedelta(seconds=seconds)
        return self.worker.sweep_completed_studies()

    def completions(self) -> list[dict[str, object]]:
        return [json.loads(v) for v in self.publisher.on(RESULTS) if b"study_complete" in v]

    def close(self) -> None:
        self.worker.request_stop()
        self.thread.join(timeout=60)
        self.engine.dispose()


@pytest.fixture
def harness(sqlite_url: str, loader, tmp_path: Path) -> Iterator[Harness]:  # noqa: ANN001
    h = Harness(sqlite_url, loader, tmp_path / "archive")
    yield h
    h.close()


def instance(h: Harness, *, at_s: float) -> bytes:
    return write_instance(h.archive, study=STUDY, received_at=T0 + dt.timedelta(seconds=at_s)).to_json()


def test_a_released_study_completes_after_the_grace_and_a_late_one_is_revised(harness: Harness) -> None:
    """Hint 1 s after the last slice: complete at 4 s (not 60 s); a late slice's association brings revision 2."""
    h = harness
    h.send(instance(h, at_s=0), instance(h, at_s=1), hint(STUDY, T0 + dt.timedelta(seconds=1)))
    assert not h.publisher.on(DLQ)  # a hint is not a poisoned instance event
    wait_for(lambda: len(h.worker._completion._released) == 1)  # noted after its batch's rows
    assert h.sweep_at(3.5) == 0  # within the grace
    assert h.sweep_at(4.5) == 1
    assert [c["n_instances"] for c in h.completions()] == [2]

    h.send(instance(h, at_s=20), hint(STUDY, T0 + dt.timedelta(seconds=20)))
    with h.sessions() as s:
        assert not s.scalars(select(StudyPrediction)).one().complete  # re-opened by the late slice
    wait_for(lambda: len(h.worker._completion._released) == 1)
    assert h.sweep_at(24) == 1
    assert [(c["n_instances"], c["revision"]) for c in h.completions()] == [(2, 1), (3, 2)]


def test_an_instance_after_the_release_leaves_the_study_to_the_timer(harness: Harness) -> None:
    """A slice from another association after the release: no early close; the stable-age timer closes it."""
    h = harness
    h.send(instance(h, at_s=0), hint(STUDY, T0 + dt.timedelta(seconds=0.5)), instance(h, at_s=2))
    assert h.sweep_at(10) == 0
    assert h.sweep_at(61) == 0
    assert h.sweep_at(62.5) == 1


def test_without_a_hint_the_timer_decides(harness: Harness) -> None:
    """No release hint (aborted association, old listener): complete at stable age only."""
    h = harness
    h.send(instance(h, at_s=0))
    assert h.sweep_at(10) == 0
    assert h.sweep_at(61) == 1


def test_intake_splits_off_well_formed_hints_and_dead_letters_the_rest() -> None:
    """Only well-formed hints are split off; junk and instance-like JSON are invalid events (dead letters)."""
    records = [
        Record("t", 0, 0, b"k", hint(STUDY, T0)),
        Record("t", 0, 1, b"k", b"not json association_released"),
        Record("t", 0, 2, b"k", json.dumps({"kind": "association_released"}).encode()),
        Record("t", 0, 3, b"k", b'{"study_instance_uid": "1.2"}'),
    ]
    intake = parse_records(records)
    assert [p.record.offset for p in intake.invalid] == [1, 2, 3] and not intake.events
    assert [(r.offset, hh.study_instance_uid) for r, hh in intake.hints] == [(0, STUDY)]
    assert [r.offset for r in intake.records] == [1, 2, 3]


def test_released_studies_ignore_bad_times_and_expire() -> None:
    """A hint without a time zone or time is ignored; hints older than keep_s are dropped."""
    released = ReleasedStudies(keep_s=63)
    released.note(
        [
            ReleaseHint(study_instance_uid="1.1", released_at="yesterday"),
            ReleaseHint(study_instance_uid="1.2", released_at="2026-12-06T10:00:00"),
            ReleaseHint(study_instance_uid="1.3", released_at=T0.isoformat()),
        ]
    )
    assert len(released) == 1 and released.released_at("1.3") == T0
    released.expire(T0 + dt.timedelta(seconds=62))
    assert len(released) == 1
    released.expire(T0 + dt.timedelta(seconds=64))
    assert len(released) == 0


def test_the_release_rule_needs_quiet_after_the_release_and_no_pending_instance() -> None:
    """Pure rule: grace after the release and the last activity, nothing after the release, nothing pending."""
    base = {"last_received_at": T0, "last_updated_at": T0, "pending_instances": 0, "grace_s": 3.0}
    at = T0 + dt.timedelta(seconds=1)
    assert is_complete_after_release(**base, released_at=at, now=T0 + dt.timedelta(seconds=4))  # type: ignore[arg-type]
    assert not is_complete_after_release(**base, released_at=at, now=T0 + dt.timedelta(seconds=3.9))  # type: ignore[arg-type]
    assert not is_complete_after_release(  # type: ignore[arg-type]
        **{**base, "pending_instances": 1}, released_at=at, now=T0 + dt.timedelta(seconds=9)
    )
    assert not is_complete_after_release(  # type: ignore[arg-type]
        **base, released_at=T0 - dt.timedelta(seconds=1), now=T0 + dt.timedelta(seconds=9)
    )


def test_a_hint_is_not_an_instance_event_and_carries_no_patient_data() -> None:
    """Round trip; InstanceEvent readers refuse it; only the study UID, a time and its kind."""
    raw = hint(STUDY, T0)
    assert ReleaseHint.of_message(raw) == ReleaseHint(study_instance_uid=STUDY, released_at=T0.isoformat())
    assert set(json.loads(raw)) == {"kind", "released_at", "schema_version", "study_instance_uid"}
    assert (
        ReleaseHint.of_message(json.dumps({"study_instance_uid": STUDY, "schema_version": 1}).encode())
        is None
    )
