"""The real services and the fixtures that hand them to tests."""

from __future__ import annotations

import os
import re

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka_process import ping
from sqlalchemy import create_engine, inspect, text


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for value in values:
            producer.send(topic, value).get(timeout=30)
    finally:
        producer.close()


def _read_all(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=20000,
    )
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        values = []
        for message in consumer:
            values.append(message.value)
            if len(values) >= expected:
                break
        return values
    finally:
        consumer.close()


def test_unique_name_is_unique_and_prefixed(unique_name) -> None:
    """unique_name gives 't-<8 hex>-<suffix>' and never the same name twice."""
    names = {unique_name("instances") for _ in range(50)}
    assert len(names) == 50
    assert all(re.fullmatch(r"t-[0-9a-f]{8}-instances", name) for name in names)


def test_kafka_round_trip(kafka_bootstrap, unique_name) -> None:
    """The shared broker stores what is produced and hands it back in order."""
    topic = unique_name("roundtrip")
    values = [f"event-{i}".encode() for i in range(5)]
    _produce(kafka_bootstrap, topic, values)
    assert _read_all(kafka_bootstrap, topic, len(values)) == values


def test_private_kafka_keeps_data_across_restart(private_kafka, unique_name) -> None:
    """A private broker stopped and started again keeps its port and its records."""
    topic = unique_name("restart")
    bootstrap = private_kafka.bootstrap
    _produce(bootstrap, topic, [b"before-stop"])
    private_kafka.stop()
    assert not private_kafka.is_running()
    private_kafka.start()
    assert private_kafka.bootstrap == bootstrap
    _produce(bootstrap, topic, [b"after-start"])
    assert _read_all(bootstrap, topic, 2) == [b"before-stop", b"after-start"]


def test_postgres_url_is_a_fresh_empty_database(postgres_url) -> None:
    """Each test gets its own empty PostgreSQL database."""
    engine = create_engine(postgres_url)
    try:
        assert engine.dialect.name == "postgresql"
        assert inspect(engine).get_table_names() == []
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE scratch (id integer)"))
        assert inspect(engine).get_table_names() == ["scratch"]
    finally:
        engine.dispose()


@pytest.mark.parametrize("attempt", [1, 2])
def test_postgres_databases_do_not_leak_between_tests(postgres_url, attempt) -> None:
    """A table created by one test is not visible in the next test's database."""
    engine = create_engine(postgres_url)
    try:
        assert "leak" not in inspect(engine).get_table_names()
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE leak (attempt integer)"))
    finally:
        engine.dispose()


def test_database_url_is_empty(database_url) -> None:
    """database_url hands out an empty SQLite or PostgreSQL database."""
    engine = create_engine(database_url)
    try:
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_private_kafka_crash_keeps_acknowledged_records_and_spares_the_shared_broker(
    private_kafka, kafka_bootstrap, unique_name
) -> None:
    """kill() crashes only the private broker; after start() its acknowledged records are back."""
    topic = unique_name("crash")
    _produce(private_kafka.bootstrap, topic, [b"acknowledged"])
    private_kafka.kill()
    assert not ping(private_kafka.bootstrap, timeout_s=2.0)
    assert ping(kafka_bootstrap, timeout_s=10.0)
    private_kafka.start()
    assert _read_all(private_kafka.bootstrap, topic, 1) == [b"acknowledged"]


def test_private_kafka_formats_storage_with_a_cluster_id_that_starts_with_a_dash(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """One base64url id in 64 starts with "-"; the storage tool must not take it for an option."""
    import kafka_process

    libs = kafka_process.default_libs_dir(os.environ.get("KIDNEYCT_SERVICES_DIR"))  # as conftest does
    if not kafka_process.libs_available(libs):
        pytest.skip(f"Kafka jars missing in {libs}")  # the broker fixtures fail CI on their absence
    monkeypatch.setattr(kafka_process.secrets, "token_urlsafe", lambda n: "-" + "A" * 30)
    broker = kafka_process.KafkaProcess.create(libs)
    try:
        broker._format_once()  # the step `start` begins with; no broker needed to check it
        meta = (broker.data_dir / "meta.properties").read_text()
    finally:
        broker.close()
    assert "cluster.id=-AAAAAAAAAAAAAAAAAAAAA" in meta
