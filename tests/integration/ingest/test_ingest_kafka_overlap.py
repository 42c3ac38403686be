"""KafkaPublisher.begin_publish against the real broker: hand over now, wait for acks=all later."""

from __future__ import annotations

import socket

import pytest

from storage.stream.contract import StreamUnavailable
from storage.stream.kafka_stream import KafkaConnection, KafkaPublisher, KafkaStreamConsumer, ensure_topics


def test_begun_publish_is_acknowledged_and_consumed(kafka_bootstrap: str, unique_name) -> None:
    """Three events begun together, then awaited: all are on the topic with their keys, in order."""
    connection = KafkaConnection(bootstrap=kafka_bootstrap)
    topic = unique_name("overlap")
    ensure_topics(connection, [topic], partitions=1, replication_factor=1)
    publisher = KafkaPublisher(connection, publish_timeout_s=30.0)
    try:
        pending = [publisher.begin_publish(topic, b"study-1", f"event-{i}".encode()) for i in range(3)]
        for p in pending:
            p.wait()
    finally:
        publisher.close()
    consumer = KafkaStreamConsumer(connection, group_id=unique_name("group"), topics=[topic])
    try:
        values: list[bytes] = []
        for _ in range(60):
            values += [r.value for r in consumer.poll(max_records=10, timeout_s=1.0) if r.key == b"study-1"]
            if len(values) >= 3:
                break
    finally:
        consumer.close()
    assert values == [b"event-0", b"event-1", b"event-2"]


def test_begun_publish_without_a_broker_raises_stream_unavailable() -> None:
    """With nothing listening, begin_publish or its wait raises StreamUnavailable, never returns."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    publisher = KafkaPublisher(KafkaConnection(bootstrap=f"127.0.0.1:{port}"), publish_timeout_s=1.0)
    with pytest.raises(StreamUnavailable):
        publisher.begin_publish("kidneyct.instances", b"k", b"v").wait()
    publisher.close()
