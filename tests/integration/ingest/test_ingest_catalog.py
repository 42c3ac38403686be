"""The catalogue on real streams and databases: instance rows before any model, offsets, no duplicates."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

import migrations
from common.health import broker_check, process_readiness
from ingest.catalog import Catalog, start_catalog_thread
from kidneyct.settings import Settings
from kidneyct.wiring.ingest import build_catalog
from storage.db.engine import make_engine, make_session_factory
from storage.db.labels import add_label, labelled_instances
from storage.db.results import (
    InstanceRow,
    SeriesRow,
    StudyRow,
    upsert_instances,
    upsert_series,
    upsert_studies,
)
from storage.db.tables import Instance, Study
from storage.failures import Backoff
from storage.stream.db_queue import DatabaseQueueConsumer, DatabaseQueuePublisher
from storage.stream.events import InstanceEvent
from storage.stream.kafka_stream import KafkaConnection, KafkaPublisher, KafkaStreamConsumer, ensure_topics

TOPIC = "instances"
T0 = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)


def _event(study: str, sop: str) -> InstanceEvent:
    return InstanceEvent(
        study_instance_uid=study,
        series_instance_uid=f"{study}.1",
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        modality="CT",
        archive_uri=f"file:///archive/{sop}.dcm",
        sha256="0" * 64,
        size_bytes=100,
        calling_ae="SCU",
        received_at=T0,
        instance_number=1,
        number_of_frames=1,
    )


@pytest.fixture
def sessions(migrated_database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(migrated_database_url)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def sqlite_sessions(sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    migrations.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    yield make_session_factory(engine)
    engine.dispose()


def _private_topic(broker: Any, unique_name: Callable[[str], str]) -> tuple[KafkaConnection, str]:
    """A fresh one-partition topic on the test's private broker."""
    topic = unique_name("instances")
    connection = KafkaConnection(bootstrap=broker.bootstrap)
    ensure_topics(connection, [topic], partitions=1, replication_factor=1)
    return connection, topic


def _states(sessions: sessionmaker[Session]) -> dict[str, str]:
    with sessions() as session:
        return dict(session.execute(select(Instance.sop_instance_uid, Instance.state)).all())


def _run_until(catalog: Catalog, done: Callable[[], bool], timeout_s: float = 60.0) -> None:
    stop = threading.Event()
    thread = start_catalog_thread(catalog, stop)
    deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=timeout_s)
    try:
        while not done():
            assert dt.datetime.now(dt.UTC) < deadline, "the catalogue did not record the events in time"
            assert thread.is_alive(), "the catalogue thread died"
            stop.wait(0.1)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive()


def _embedded(sessions: sessionmaker[Session], group: str) -> Catalog:
    return Catalog(
        make_consumer=lambda: DatabaseQueueConsumer(sessions, group_id=group, topics=[TOPIC]),
        sessions=sessions,
    )


def test_events_become_received_rows_that_labels_find(sessions: sessionmaker[Session]) -> None:
    """Events become study/series/instance rows in state `received`; a poison event is skipped; labels see them."""
    publisher = DatabaseQueuePublisher(sessions)
    events = [_event("1.2.3", f"1.2.3.{i}") for i in range(5)]
    publisher.publish(TOPIC, b"x", b"not json")
    for e in events:
        publisher.publish(TOPIC, e.key, e.to_json())
    catalog = _embedded(sessions, "catalog")
    _run_until(catalog, lambda: len(_states(sessions)) == 5)
    assert _states(sessions) == {e.sop_instance_uid: "received" for e in events}
    with sessions.begin() as session:
        add_label(session, label="Stone", source="test", now=T0, study_instance_uid="1.2.3")
    with sessions() as session:
        assert {i.sop_instance_uid for i in labelled_instances(session)} == {
            e.sop_instance_uid for e in events
        }


def test_offsets_are_committed_and_a_replay_adds_no_rows(sessions: sessionmaker[Session]) -> None:
    """After a pass its group has nothing left; another group replaying everything makes no second row."""
    publisher = DatabaseQueuePublisher(sessions)
    for i in range(3):
        e = _event("1.2.4", f"1.2.4.{i}")
        publisher.publish(TOPIC, e.key, e.to_json())
    _run_until(_embedded(sessions, "g1"), lambda: len(_states(sessions)) == 3)
    assert DatabaseQueueConsumer(sessions, group_id="g1", topics=[TOPIC]).poll(10, 0.2) == []
    replay = _embedded(sessions, "g2")
    _run_until(replay, lambda: replay.catalogued == 3)
    with sessions() as session:
        assert session.scalar(select(func.count(Instance.id))) == 3
        assert session.scalar(select(func.count(Study.id))) == 1


def test_the_catalogue_never_overwrites_what_a_worker_wrote(sessions: sessionmaker[Session]) -> None:
    """A worker's `processed`/`failed` row stays as it is when the catalogue's `received` comes later."""
    done, failed = _event("1.2.6", "1.2.6.1"), _event("1.2.6", "1.2.6.2")
    with sessions.begin() as session:
        study_ids = upsert_studies(session, studies=[StudyRow("1.2.6", "ACC", T0)])
        series_ids = upsert_series(session, series=[SeriesRow("1.2.6.1", "1.2.6", "CT")], study_ids=study_ids)
        rows = [
            InstanceRow(
                e.sop_instance_uid,
                e.series_instance_uid,
                e.sop_class_uid,
                e.transfer_syntax_uid,
                e.archive_uri,
                e.sha256,
                e.size_bytes,
                e.calling_ae,
                1,
                1,
                T0,
                state,
                reason,
            )
            for e, state, reason in ((done, "processed", None), (failed, "failed", "undecodable"))
        ]
        upsert_instances(session, instances=rows, series_ids=series_ids, now=T0)
    publisher = DatabaseQueuePublisher(sessions)
    for e in (done, failed):
        publisher.publish(TOPIC, e.key, e.to_json())
    catalog = _embedded(sessions, "late")
    _run_until(catalog, lambda: catalog.catalogued == 2)
    assert _states(sessions) == {"1.2.6.1": "processed", "1.2.6.2": "failed"}
    with sessions() as session:
        assert session.scalar(select(Study.accession_number)) == "ACC"  # the worker's accession survives


@pytest.mark.kafka
def test_the_catalogue_reads_kafka_in_its_own_group(
    kafka_bootstrap: str, postgres_url: str, unique_name: Callable[[str], str]
) -> None:
    """On Kafka + PostgreSQL, events published by the listener's publisher become rows; the worker's group is untouched."""
    migrations.upgrade(postgres_url)
    engine = make_engine(postgres_url)
    sessions = make_session_factory(engine)
    topic = unique_name("instances")
    connection = KafkaConnection(bootstrap=kafka_bootstrap)
    ensure_topics(connection, [topic], partitions=2, replication_factor=1)
    publisher = KafkaPublisher(connection, publish_timeout_s=10)
    events = [_event("1.2.7", f"1.2.7.{i}") for i in range(4)]
    for e in events:
        publisher.publish(topic, e.key, e.to_json())
    publisher.close()
    catalog = Catalog(
        make_consumer=lambda: KafkaStreamConsumer(
            connection, group_id=unique_name("catalog"), topics=[topic]
        ),
        sessions=sessions,
    )
    try:
        _run_until(catalog, lambda: len(_states(sessions)) == 4, timeout_s=120)
        worker_group = KafkaStreamConsumer(connection, group_id=unique_name("classifier"), topics=[topic])
        try:
            seen: list[object] = []
            deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
            while len(seen) < 4 and dt.datetime.now(dt.UTC) < deadline:
                seen.extend(worker_group.poll(10, 1.0))
            assert len(seen) == 4  # the worker's group still gets every event
        finally:
            worker_group.close()
    finally:
        engine.dispose()


@pytest.mark.kafka
def test_the_catalogue_waits_for_a_broker_that_is_down_at_start(
    private_kafka: Any, sqlite_sessions: sessionmaker[Session], unique_name: Callable[[str], str]
) -> None:
    """With the broker down when `kidneyct listen` starts, the catalogue thread stays alive, says
    so once, reports not ready, and records the instances once the broker is back (issue 23, item 10)."""
    connection, topic = _private_topic(private_kafka, unique_name)
    private_kafka.stop()
    settings = Settings(
        kafka_bootstrap=private_kafka.bootstrap, topic_instances=topic, catalog_group=unique_name("catalog")
    )
    catalog = build_catalog(settings, sqlite_sessions)
    readiness = process_readiness(
        sessions=None, kafka_bootstrap=settings.kafka_bootstrap, catalog_connected=catalog.is_connected
    )
    stop = threading.Event()
    with structlog.testing.capture_logs() as logs:
        thread = start_catalog_thread(catalog, stop)
        try:
            _await(lambda: _outage_lines(logs, "catalog_connect") == ["dependency_unavailable"], 30)
            stop.wait(3)  # several attempts, still down
            assert thread.is_alive()
            assert readiness.report()["catalog"] == "not ready"
            private_kafka.start()
            _publish(connection, topic, [_event("1.2.8", f"1.2.8.{i}") for i in range(3)])
            _await(lambda: len(_states(sqlite_sessions)) == 3, 120)
            assert catalog.is_connected()
            assert readiness.report()["catalog"] == "ok"
        finally:
            stop.set()
            thread.join(timeout=30)
    assert _outage_lines(logs, "catalog_connect") == ["dependency_unavailable", "dependency_recovered"]


def _outage_lines(logs: Sequence[Mapping[str, Any]], action: str) -> list[str]:
    return [e["event"] for e in logs if e.get("action") == action]


def _await(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=timeout_s)
    while not condition():
        assert dt.datetime.now(dt.UTC) < deadline, "condition not met in time"
        threading.Event().wait(0.2)


def test_a_catalogue_stopped_while_the_broker_is_down_ends_quietly(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopped before the stream ever answered: the thread ends, two lines say so, none from kafka-python."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    engine = make_engine(sqlite_url)
    catalog = Catalog(
        make_consumer=lambda: KafkaStreamConsumer(
            KafkaConnection(bootstrap=closed), group_id="catalog", topics=[TOPIC]
        ),
        sessions=make_session_factory(engine),
        stream_reachable=broker_check(closed),
        backoff=Backoff(initial_s=0.05, max_s=0.1),
    )
    stop = threading.Event()
    with structlog.testing.capture_logs() as logs:
        thread = start_catalog_thread(catalog, stop)
        _await(lambda: any(e["event"] == "dependency_unavailable" for e in logs), 30)
        stop.wait(0.5)
        stop.set()
        thread.join(timeout=30)
    engine.dispose()
    assert not thread.is_alive() and not catalog.is_connected()
    assert [e["event"] for e in logs] == ["dependency_unavailable", "catalog_stopped"]  # not one per attempt
    assert [e["connected"] for e in logs if e["event"] == "catalog_stopped"] == [False]
    assert not [r for r in caplog.records if r.name.startswith("kafka")]


@pytest.mark.kafka
def test_a_broker_gone_mid_run_is_one_outage_and_not_ready_until_it_is_back(
    private_kafka: Any, sqlite_sessions: sessionmaker[Session], unique_name: Callable[[str], str]
) -> None:
    """The broker stops after the catalogue connected: one line when the polls stop reaching it, not
    ready meanwhile (kafka-python's poll just returns nothing), one line and ready again once it
    is back, and what was published after the restart is catalogued (issue 25, item 3)."""
    connection, topic = _private_topic(private_kafka, unique_name)
    catalog = Catalog(
        make_consumer=lambda: KafkaStreamConsumer(
            connection, group_id=unique_name("catalog"), topics=[topic]
        ),
        sessions=sqlite_sessions,
        stream_reachable=broker_check(private_kafka.bootstrap),
        backoff=Backoff(initial_s=0.2, max_s=1.0),
    )
    readiness = process_readiness(
        sessions=None, kafka_bootstrap=private_kafka.bootstrap, catalog_connected=catalog.is_connected
    )
    stop = threading.Event()
    with structlog.testing.capture_logs() as logs:
        thread = start_catalog_thread(catalog, stop)
        try:
            _publish(connection, topic, [_event("1.2.9", "1.2.9.0")])
            _await(lambda: len(_states(sqlite_sessions)) == 1, 120)
            assert catalog.is_connected()
            private_kafka.stop()
            _await(lambda: not catalog.is_connected(), 30)
            stop.wait(4)  # many polls, still down
            assert thread.is_alive() and readiness.report()["catalog"] == "not ready"
            assert _outage_lines(logs, "catalog_poll") == ["dependency_unavailable"]
            private_kafka.start()
            _publish(connection, topic, [_event("1.2.9", f"1.2.9.{i}") for i in (1, 2)])
            _await(lambda: len(_states(sqlite_sessions)) == 3, 120)
            assert readiness.report()["catalog"] == "ok"
        finally:
            stop.set()
            thread.join(timeout=30)
    assert _outage_lines(logs, "catalog_poll") == ["dependency_unavailable", "dependency_recovered"]
    assert not [e for e in logs if e["event"] == "catalog_poll_failed"]


def _publish(connection: KafkaConnection, topic: str, events: list[InstanceEvent]) -> None:
    publisher = KafkaPublisher(connection, publish_timeout_s=30)
    try:
        for e in events:
            publisher.publish(topic, e.key, e.to_json())
    finally:
        publisher.close()


def test_an_event_that_cannot_be_stored_is_left_out_and_the_rest_recorded(
    sessions: sessionmaker[Session],
) -> None:
    """A value beyond its column (a data failure) is not retried forever: the batch is recorded one
    by one, that event is left out with one line, the others are recorded and the offsets committed."""
    publisher = DatabaseQueuePublisher(sessions)
    good = [_event("1.2.10", f"1.2.10.{i}") for i in range(2)]
    huge = dataclasses.replace(_event("1.2.10", "1.2.10.9"), size_bytes=2**70)
    for e in (good[0], huge, good[1]):
        publisher.publish(TOPIC, e.key, e.to_json())
    catalog = _embedded(sessions, "data")
    with structlog.testing.capture_logs() as logs:
        _run_until(catalog, lambda: catalog.catalogued == 2)
    assert _states(sessions) == {e.sop_instance_uid: "received" for e in good}
    skipped = [e for e in logs if e["event"] == "catalog_skipped_unstorable_event"]
    assert [e["sop_instance_uid"] for e in skipped] == ["1.2.10.9"]
    assert DatabaseQueueConsumer(sessions, group_id="data", topics=[TOPIC]).poll(10, 0.2) == []


def test_a_database_without_the_schema_ends_the_catalogue_with_one_line(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """Recording into a database never migrated: `catalog_failed` naming `kidneyct db upgrade`, the
    thread ends, not ready; nothing committed (the stream is a migrated database of its own here)."""
    publisher = DatabaseQueuePublisher(sessions)
    e = _event("1.2.11", "1.2.11.1")
    publisher.publish(TOPIC, e.key, e.to_json())
    empty = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    catalog = Catalog(
        make_consumer=lambda: DatabaseQueueConsumer(sessions, group_id="schema", topics=[TOPIC]),
        sessions=make_session_factory(empty),
    )
    with structlog.testing.capture_logs() as logs:
        thread = start_catalog_thread(catalog, threading.Event())
        thread.join(timeout=30)
    empty.dispose()
    assert not thread.is_alive() and not catalog.is_connected()
    failed = [x for x in logs if x["event"] == "catalog_failed"]
    assert len(failed) == 1 and "kidneyct db upgrade" in failed[0]["error"]
    assert len(DatabaseQueueConsumer(sessions, group_id="schema", topics=[TOPIC]).poll(10, 0.2)) == 1
