"""`kidneyct kafka init`: create the topics with the configured partitions and replication."""

from __future__ import annotations

import click
import structlog

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
    created = ensure_topics(
        kafka_connection(settings),
        topics,
        partitions=settings.kafka_partitions,
        replication_factor=settings.kafka_replication_factor,
    )
    log.info("kafka_topics_ready", topics=topics, created=created, partitions=settings.kafka_partitions)
