"""`kidneyct kafka init`: create the topics with the configured partitions and replication."""

from __future__ import annotations

import logging

import click
import structlog
from kafka.errors import KafkaError

from kidneyct.settings import Settings
from kidneyct.streams import kafka_connection
from storage.kafka_stream import ensure_topics

log = structlog.get_logger(__name__)


@click.group()
def kafka() -> None:
    """Create the Kafka topics."""


@kafka.command()
@click.pass_obj
def init(settings: Settings) -> None:
    """Create the instances, results and dead-letter topics if they do not exist."""
    if not settings.uses_kafka:
        raise click.ClickException("KIDNEYCT_KAFKA_BOOTSTRAP is not set: the embedded queue needs no topics")
    topics = [settings.topic_instances, settings.topic_results, settings.topic_dead_letter]
    # kafka-python logs every failed connection attempt; the one line below says what went wrong.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    try:
        created = ensure_topics(
            kafka_connection(settings),
            topics,
            partitions=settings.kafka_partitions,
            replication_factor=settings.kafka_replication_factor,
        )
    except KafkaError as exc:
        reason = str(exc) if str(exc).startswith(type(exc).__name__) else f"{type(exc).__name__}: {exc}"
        raise click.ClickException(
            f"cannot create the topics on {settings.kafka_bootstrap}: {reason}"
        ) from None
    log.info("kafka_topics_ready", topics=topics, created=created, partitions=settings.kafka_partitions)
