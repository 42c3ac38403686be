"""The demo's catalogue consumer on the real embedded queue: instance rows before any model exists."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

import migrations
from kidneyct.demo_catalog import catalogue_until
from storage.db import make_engine, make_session_factory
from storage.db_queue import DatabaseQueueConsumer, DatabaseQueuePublisher
from storage.events import InstanceEvent
from storage.labels import add_label, labelled_instances
from storage.models import Instance, Study

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
        received_at=T0.isoformat(),
        instance_number=1,
        number_of_frames=1,
    )


@pytest.fixture
def sessions(sqlite_url: str):
    migrations.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    yield make_session_factory(engine)
    engine.dispose()


def test_catalogue_records_received_instances_so_labels_find_them(sessions) -> None:
    """Events become study/series/instance rows in state `received`; labelled_instances then sees them."""
    publisher = DatabaseQueuePublisher(sessions)
    events = [_event("1.2.3", f"1.2.3.{i}") for i in range(5)]
    for e in events:
        publisher.publish(TOPIC, e.key, e.to_json())
    publisher.publish(TOPIC, b"x", b"not json")  # a poison event is skipped, not fatal
    consumer = DatabaseQueueConsumer(sessions, group_id="catalogue", topics=[TOPIC])
    seen = catalogue_until(consumer, sessions, expected={e.sop_instance_uid for e in events}, timeout_s=30)
    assert seen == {e.sop_instance_uid for e in events}
    with sessions.begin() as session:
        states = dict(session.execute(select(Instance.sop_instance_uid, Instance.state)).all())
        assert states == dict.fromkeys(seen, "received")
        add_label(session, label="Stone", source="test", now=T0, study_instance_uid="1.2.3")
    with sessions() as session:
        assert {i.sop_instance_uid for i in labelled_instances(session)} == seen


def test_catalogue_commits_offsets_and_a_second_pass_makes_no_duplicates(sessions) -> None:
    """A new consumer of the same group starts after what was recorded; replaying another group adds no rows."""
    publisher = DatabaseQueuePublisher(sessions)
    events = [_event("1.2.4", f"1.2.4.{i}") for i in range(3)]
    for e in events:
        publisher.publish(TOPIC, e.key, e.to_json())
    expected = {e.sop_instance_uid for e in events}
    catalogue_until(
        DatabaseQueueConsumer(sessions, group_id="g1", topics=[TOPIC]),
        sessions,
        expected=expected,
        timeout_s=30,
    )
    assert DatabaseQueueConsumer(sessions, group_id="g1", topics=[TOPIC]).poll(10, 0.2) == []
    catalogue_until(
        DatabaseQueueConsumer(sessions, group_id="g2", topics=[TOPIC]),
        sessions,
        expected=expected,
        timeout_s=30,
    )
    with sessions() as session:
        assert session.scalar(select(func.count(Instance.id))) == 3
        assert session.scalar(select(func.count(Study.id))) == 1


def test_catalogue_times_out_naming_the_missing_instances(sessions) -> None:
    """When expected instances never arrive, a TimeoutError says how many are missing."""
    publisher = DatabaseQueuePublisher(sessions)
    e = _event("1.2.5", "1.2.5.1")
    publisher.publish(TOPIC, e.key, e.to_json())
    consumer = DatabaseQueueConsumer(sessions, group_id="g", topics=[TOPIC])
    with pytest.raises(TimeoutError, match="1 of 2 instances never arrived"):
        catalogue_until(consumer, sessions, expected={"1.2.5.1", "1.2.5.2"}, timeout_s=1.5)
