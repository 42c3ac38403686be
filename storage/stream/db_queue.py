"""The embedded durable queue: the stream contract on top of the database, for running without Kafka.

Messages are rows of `queue_messages` (the id is the offset, one partition per topic); a consumer
group's committed position is a row of `queue_offsets`. A published message is durable once its
transaction commits, so it survives a restart of the process. One consumer per group and topic:
unlike Kafka, the embedded queue does not spread partitions over several consumers.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Mapping

from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from storage.db.tables import QueueMessage, QueueOffset
from storage.stream.contract import Record, StreamUnavailable, TopicPartition

EMBEDDED_PARTITION = 0
# Any constant works: it only has to be the same for every publisher of one database.
_PUBLISH_LOCK_KEY = 0x6B69646E


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _reason(exc: SQLAlchemyError) -> str:
    """The driver's first line (for example `no such table: queue_messages`), never the parameters."""
    orig = getattr(exc, "orig", None)
    detail = str(orig).strip().splitlines()[0] if orig is not None and str(orig).strip() else ""
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


_INSERT_MESSAGE = insert(QueueMessage)


class DatabaseQueuePublisher:
    """Appends each event in its own committed transaction."""

    def __init__(
        self, session_factory: sessionmaker[Session], *, doorbell: threading.Condition | None = None
    ) -> None:
        self._session_factory = session_factory
        # A connection, not a session, per publish: the ORM's unit of work cost 2-3x the CPU of
        # the insert itself, once per received instance (benchmarks/profile_listener.py).
        self._engine: Engine = session_factory.kw["bind"]
        self._doorbell = doorbell

    def publish(self, topic: str, key: bytes, value: bytes) -> None:
        row = {"topic": topic, "key": key, "value": value, "created_at": _utcnow()}
        try:
            with self._engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    # Serialise publishers so ids commit in id order; otherwise a consumer could move
                    # past an id whose transaction commits later and never see it.
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PUBLISH_LOCK_KEY})
                conn.execute(_INSERT_MESSAGE, row)
        except SQLAlchemyError as exc:
            raise StreamUnavailable(f"embedded queue write failed: {_reason(exc)}") from exc
        if self._doorbell is not None:
            with self._doorbell:
                self._doorbell.notify_all()

    def close(self) -> None:
        """Nothing is buffered: every publish is committed before it returns."""


class DatabaseQueueConsumer:
    """Reads a group's topics from its committed offsets on; `poll` advances an in-memory position."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        group_id: str,
        topics: list[str],
        poll_interval_s: float = 0.05,
        doorbell: threading.Condition | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session_factory = session_factory
        self._group_id = group_id
        self._topics = list(topics)
        self._poll_interval_s = poll_interval_s
        self._doorbell = doorbell or threading.Condition()
        self._clock = clock
        self._position: dict[str, int] | None = None

    def _load_positions(self, session: Session) -> dict[str, int]:
        rows = session.execute(
            select(QueueOffset.topic, QueueOffset.next_offset).where(
                QueueOffset.group_id == self._group_id, QueueOffset.topic.in_(self._topics)
            )
        ).all()
        committed = {topic: offset for topic, offset in rows}
        return {topic: committed.get(topic, 0) for topic in self._topics}

    def _fetch(self, max_records: int) -> list[Record]:
        with self._session_factory() as session:
            if self._position is None:
                self._position = self._load_positions(session)
            records: list[Record] = []
            for topic in self._topics:
                room = max_records - len(records)
                if room <= 0:
                    break
                rows = session.scalars(
                    select(QueueMessage)
                    .where(QueueMessage.topic == topic, QueueMessage.id >= self._position[topic])
                    .order_by(QueueMessage.id)
                    .limit(room)
                ).all()
                records.extend(Record(topic, EMBEDDED_PARTITION, m.id, m.key, m.value) for m in rows)
            for r in records:
                self._position[r.topic] = r.offset + 1
            return records

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        deadline = self._clock() + timeout_s
        while True:
            try:
                records = self._fetch(max_records)
            except SQLAlchemyError as exc:
                raise StreamUnavailable(f"embedded queue read failed: {type(exc).__name__}") from exc
            remaining = deadline - self._clock()
            if records or remaining <= 0:
                return records
            with self._doorbell:
                self._doorbell.wait(min(self._poll_interval_s, remaining))

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        try:
            with self._session_factory.begin() as session:
                for tp, offset in offsets.items():
                    row = session.get(QueueOffset, (self._group_id, tp.topic))
                    if row is None:
                        session.add(QueueOffset(group_id=self._group_id, topic=tp.topic, next_offset=offset))
                    elif offset > row.next_offset:
                        row.next_offset = offset
        except SQLAlchemyError as exc:
            raise StreamUnavailable(f"embedded queue commit failed: {type(exc).__name__}") from exc

    def backlog(self) -> int | None:
        """Messages of the group's topics at or after the position read so far (or committed)."""
        try:
            with self._session_factory() as session:
                position = self._position if self._position is not None else self._load_positions(session)
                total = 0
                for topic, next_offset in position.items():
                    total += (
                        session.scalar(
                            select(func.count())
                            .select_from(QueueMessage)
                            .where(QueueMessage.topic == topic, QueueMessage.id >= next_offset)
                        )
                        or 0
                    )
                return total
        except SQLAlchemyError as exc:
            raise StreamUnavailable(f"embedded queue read failed: {_reason(exc)}") from exc

    def close(self) -> None:
        self._position = None
