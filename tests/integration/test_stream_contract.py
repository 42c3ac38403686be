"""One contract for the event stream, run against the embedded queue (SQLite, PostgreSQL) and real Kafka."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

import migrations
from storage.db.engine import make_engine, make_session_factory
from storage.stream.contract import Consumer, Publisher, Record, StreamUnavailable, next_offsets
from storage.stream.db_queue import DatabaseQueueConsumer, DatabaseQueuePublisher
from storage.stream.kafka_stream import KafkaConnection, KafkaPublisher, KafkaStreamConsumer, ensure_topics


@dataclass
class StreamBackend:
    name: str
    publisher: Callable[[], Publisher]
    consumer: Callable[[str, list[str]], Consumer]
    topic: str
    restart: Callable[[], None]


@pytest.fixture(params=["embedded-sqlite", "embedded-postgres", "kafka"])
def backend(request: pytest.FixtureRequest, unique_name: Callable[[str], str]) -> Iterator[StreamBackend]:
    topic = unique_name("contract")
    opened: list[Publisher | Consumer] = []

    def track(thing):  # noqa: ANN001, ANN202 - returns what it is given
        opened.append(thing)
        return thing

    if request.param == "kafka":
        bootstrap = request.getfixturevalue("kafka_bootstrap")
        connection = KafkaConnection(bootstrap=bootstrap)
        ensure_topics(connection, [topic], partitions=2, replication_factor=1)
        yield StreamBackend(
            request.param,
            lambda: track(KafkaPublisher(connection, publish_timeout_s=10)),
            lambda group, topics: track(KafkaStreamConsumer(connection, group_id=group, topics=topics)),
            topic,
            lambda: None,
        )
    else:
        url = request.getfixturevalue("sqlite_url" if request.param == "embedded-sqlite" else "postgres_url")
        migrations.upgrade(url)
        engines = [make_engine(url)]

        def restart() -> None:
            # A new engine is what a restarted process gets: nothing survives but the database.
            engines[0].dispose()
            engines[0] = make_engine(url)

        yield StreamBackend(
            request.param,
            lambda: track(DatabaseQueuePublisher(make_session_factory(engines[0]))),
            lambda group, topics: track(
                DatabaseQueueConsumer(make_session_factory(engines[0]), group_id=group, topics=topics)
            ),
            topic,
            restart,
        )
        engines[0].dispose()
    for thing in opened:
        thing.close()


def poll_until(consumer: Consumer, count: int, deadline_s: float = 30.0) -> list[Record]:
    """Poll until `count` records arrived or the deadline passed."""
    records: list[Record] = []
    deadline = time.monotonic() + deadline_s
    while len(records) < count and time.monotonic() < deadline:
        records.extend(consumer.poll(max_records=count - len(records), timeout_s=0.5))
    return records


def test_published_events_are_consumed_with_key_and_value(backend: StreamBackend, unique_name) -> None:
    """Every acknowledged event reaches a consumer with its key and value intact."""
    publisher = backend.publisher()
    sent = [(f"study-{i % 3}".encode(), f"event-{i}".encode()) for i in range(9)]
    for key, value in sent:
        publisher.publish(backend.topic, key, value)
    records = poll_until(backend.consumer(unique_name("g"), [backend.topic]), len(sent))
    assert sorted((r.key, r.value) for r in records) == sorted(sent)


def test_events_of_one_key_stay_in_order(backend: StreamBackend, unique_name) -> None:
    """Events with the same key (one study) are consumed in the order they were published."""
    publisher = backend.publisher()
    for i in range(12):
        publisher.publish(backend.topic, b"study-a" if i % 2 else b"study-b", str(i).encode())
    records = poll_until(backend.consumer(unique_name("g"), [backend.topic]), 12)
    for key in (b"study-a", b"study-b"):
        values = [int(r.value) for r in records if r.key == key]
        assert values == sorted(values) and len(values) == 6


def test_uncommitted_events_are_redelivered_after_restart(backend: StreamBackend, unique_name) -> None:
    """A consumer that dies before committing leaves its events to the next member of the group."""
    group = unique_name("g")
    publisher = backend.publisher()
    for i in range(4):
        publisher.publish(backend.topic, b"k", str(i).encode())
    first = backend.consumer(group, [backend.topic])
    assert len(poll_until(first, 4)) == 4
    first.close()
    backend.restart()
    replayed = poll_until(backend.consumer(group, [backend.topic]), 4)
    assert [r.value for r in replayed] == [b"0", b"1", b"2", b"3"]


def test_committed_events_are_not_redelivered(backend: StreamBackend, unique_name) -> None:
    """After a commit, the group resumes after the committed offsets and sees only newer events."""
    group = unique_name("g")
    publisher = backend.publisher()
    for i in range(3):
        publisher.publish(backend.topic, b"k", str(i).encode())
    first = backend.consumer(group, [backend.topic])
    records = poll_until(first, 3)
    first.commit(next_offsets(records))
    first.close()
    backend.restart()
    publisher = backend.publisher()
    publisher.publish(backend.topic, b"k", b"3")
    second = backend.consumer(group, [backend.topic])
    assert [r.value for r in poll_until(second, 1)] == [b"3"]
    assert second.poll(max_records=10, timeout_s=1.0) == []


def test_backlog_counts_what_this_consumer_has_not_read(backend: StreamBackend, unique_name) -> None:
    """Ten published, four read: a backlog of six (Kafka: once both partitions were fetched)."""
    publisher = backend.publisher()
    for i in range(10):
        publisher.publish(backend.topic, f"k{i}".encode(), b"v")
    consumer = backend.consumer(unique_name("group"), [backend.topic])
    read = poll_until(consumer, 4)
    backlog = consumer.backlog()
    deadline = time.monotonic() + 30
    while backlog is None and time.monotonic() < deadline:  # Kafka: high-water marks come with fetches
        read.extend(consumer.poll(max_records=1, timeout_s=0.5))
        backlog = consumer.backlog()
    assert backlog == 10 - len(read)
    read.extend(poll_until(consumer, 10 - len(read)))
    assert len(read) == 10
    assert consumer.backlog() == 0  # type: ignore[attr-defined]


def test_poll_waits_at_most_its_timeout(backend: StreamBackend, unique_name) -> None:
    """An empty topic answers a poll with no records once the timeout has passed."""
    consumer = backend.consumer(unique_name("g"), [backend.topic])
    poll_until(consumer, 0)
    started = time.monotonic()
    assert consumer.poll(max_records=5, timeout_s=0.3) == []
    assert time.monotonic() - started < 10


def test_kafka_consumer_raises_stream_unavailable_when_no_broker_answers() -> None:
    """kafka-python 3 bootstraps in the consumer's constructor: no broker is StreamUnavailable, not a KafkaError."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    connection = KafkaConnection(bootstrap=f"127.0.0.1:{port}", extra={"bootstrap_timeout_ms": 1000})
    with pytest.raises(StreamUnavailable, match=f"127.0.0.1:{port}"):
        KafkaStreamConsumer(connection, group_id="g", topics=["t"])


def test_kafka_publisher_raises_when_no_broker_answers() -> None:
    """With no broker, publish raises StreamUnavailable within its timeout instead of hanging or succeeding."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    publisher = KafkaPublisher(KafkaConnection(bootstrap=f"127.0.0.1:{port}"), publish_timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(StreamUnavailable):
        publisher.publish("kidneyct.instances", b"k", b"v")
    assert time.monotonic() - started < 15


def test_embedded_publisher_raises_when_the_database_is_gone(tmp_path) -> None:
    """A queue whose database cannot be written raises StreamUnavailable, never returns as if durable."""
    url = f"sqlite:///{tmp_path / 'q.db'}"
    migrations.upgrade(url)
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE queue_messages")
    # The reason (the driver's first line) travels with it, so the listener's log says why it answered 0xA700.
    with pytest.raises(StreamUnavailable, match="no such table: queue_messages"):
        DatabaseQueuePublisher(make_session_factory(engine)).publish("t", b"k", b"v")


def test_kafka_publisher_shares_one_producer_across_threads(kafka_bootstrap: str, unique_name) -> None:
    """Parallel associations publish through one producer: every event is acknowledged and delivered once."""
    from concurrent.futures import ThreadPoolExecutor

    connection = KafkaConnection(bootstrap=kafka_bootstrap)
    topic = unique_name("threads")
    ensure_topics(connection, [topic], partitions=2, replication_factor=1)
    created: list[object] = []

    class CountingPublisher(KafkaPublisher):
        def _new_producer(self):  # noqa: ANN202 - records each producer made
            created.append(producer := super()._new_producer())
            return producer

    publisher = CountingPublisher(connection, publish_timeout_s=10)
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(
                pool.map(lambda i: publisher.publish(topic, str(i % 4).encode(), str(i).encode()), range(64))
            )
    finally:
        publisher.close()
    consumer = KafkaStreamConsumer(connection, group_id=unique_name("g"), topics=[topic])
    try:
        values = sorted(int(r.value) for r in poll_until(consumer, 64))
    finally:
        consumer.close()
    assert values == list(range(64))
    assert len(created) == 1
