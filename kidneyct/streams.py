"""Chooses the event stream from the settings: Kafka when a bootstrap is configured, else the
embedded database queue. Both honour the same `Publisher`/`Consumer` contract.

A process that runs both ends of the embedded queue (`kidneyct serve`) makes one doorbell
(`threading.Condition`) and passes it to its publisher and consumers, so a publish wakes them at once;
without one, embedded consumers poll (every 50 ms).
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from kidneyct.settings import Settings
from storage.stream.contract import Consumer, Publisher
from storage.stream.db_queue import DatabaseQueueConsumer, DatabaseQueuePublisher
from storage.stream.kafka_stream import KafkaConnection, KafkaPublisher, KafkaStreamConsumer


def kafka_connection(settings: Settings, *, client_id: str = "kidneyct") -> KafkaConnection:
    if not settings.kafka_bootstrap:
        raise ValueError("KIDNEYCT_KAFKA_BOOTSTRAP is not set")
    return KafkaConnection(
        bootstrap=settings.kafka_bootstrap,
        security_protocol=settings.kafka_security_protocol,
        client_id=client_id,
        extra=kafka_security_options(settings),
    )


def kafka_security_options(settings: Settings) -> dict[str, Any]:
    """kafka-python's TLS and SASL options from the settings (producer, consumer and admin alike)."""
    options: dict[str, Any] = {}
    for option, path in (
        ("ssl_cafile", settings.kafka_ssl_cafile),
        ("ssl_certfile", settings.kafka_ssl_certfile),
        ("ssl_keyfile", settings.kafka_ssl_keyfile),
    ):
        if path is not None:
            options[option] = str(path)
    if settings.kafka_sasl_mechanism is not None:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
    if settings.kafka_sasl_username is not None:
        options["sasl_plain_username"] = settings.kafka_sasl_username
    if settings.kafka_sasl_password is not None:
        options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


def make_publisher(
    settings: Settings, session_factory: sessionmaker[Session], *, doorbell: threading.Condition | None = None
) -> Publisher:
    if settings.uses_kafka:
        return KafkaPublisher(kafka_connection(settings), publish_timeout_s=settings.kafka_publish_timeout_s)
    return DatabaseQueuePublisher(session_factory, doorbell=doorbell)


def make_consumer(
    settings: Settings,
    session_factory: sessionmaker[Session],
    *,
    group_id: str,
    topics: list[str],
    doorbell: threading.Condition | None = None,
) -> Consumer:
    if settings.uses_kafka:
        return KafkaStreamConsumer(
            kafka_connection(settings, client_id=group_id), group_id=group_id, topics=topics
        )
    return DatabaseQueueConsumer(session_factory, group_id=group_id, topics=topics, doorbell=doorbell)
