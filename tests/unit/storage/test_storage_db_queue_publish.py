"""The embedded queue's publish (a Core insert on a connection since issue 29): the same row as the
ORM wrote, committed before it returns, the doorbell rung; a database without the queue table
raises StreamUnavailable. SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import select

from storage.db.engine import make_engine, make_session_factory
from storage.db.tables import QueueMessage
from storage.stream.contract import StreamUnavailable
from storage.stream.db_queue import DatabaseQueuePublisher


class CountingDoorbell(threading.Condition):
    """A doorbell that counts its rings."""

    rings = 0

    def notify_all(self) -> None:
        self.rings += 1
        super().notify_all()


def test_publish_commits_the_row_with_its_fields_and_rings_the_doorbell(migrated_database_url: str) -> None:
    """Topic, key, value and an aware created_at, ids in publish order, visible to a new session."""
    engine = make_engine(migrated_database_url)
    doorbell = CountingDoorbell()
    try:
        publisher = DatabaseQueuePublisher(make_session_factory(engine), doorbell=doorbell)
        before = dt.datetime.now(dt.UTC)
        publisher.publish("instances", b"1.2.3", b'{"a":1}')
        publisher.publish("instances", b"1.2.4", b"\x00\xff")
        with make_session_factory(engine)() as session:
            rows = session.scalars(select(QueueMessage).order_by(QueueMessage.id)).all()
        assert [(r.topic, bytes(r.key), bytes(r.value)) for r in rows] == [
            ("instances", b"1.2.3", b'{"a":1}'),
            ("instances", b"1.2.4", b"\x00\xff"),
        ]
        assert all(
            r.created_at.tzinfo is not None and r.created_at >= before - dt.timedelta(seconds=1) for r in rows
        )
        assert doorbell.rings == 2
    finally:
        engine.dispose()


def test_publish_without_the_queue_table_raises_stream_unavailable(database_url: str) -> None:
    """An empty database (no `db upgrade`): StreamUnavailable naming the driver's error, no parameters."""
    engine = make_engine(database_url)
    try:
        publisher = DatabaseQueuePublisher(make_session_factory(engine))
        with pytest.raises(StreamUnavailable, match="embedded queue write failed") as raised:
            publisher.publish("instances", b"1.2.3", b"secret-value")
        assert "secret-value" not in str(raised.value)
    finally:
        engine.dispose()
