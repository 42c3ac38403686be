"""`kidneyct kafka init`: create the topics with the configured partitions, replication, retention and
`min.insync.replicas`, and say so when the broker auto-creates topics with another partition count."""

from __future__ import annotations

import logging

import click
import structlog
from kafka.errors import KafkaError

from kidneyct.settings import Settings
from kidneyct.streams import kafka_connection
from storage.stream.kafka_topics import TopicPolicy, TopicsReport, inspect_topics, prepare_topics

log = structlog.get_logger(__name__)


@click.group()
def kafka() -> None:
    """Create the Kafka topics."""


def _check_auto_create(found: TopicsReport, wanted: int, accept_partitions: bool) -> None:
    """A broker that auto-creates topics makes them with its own `num.partitions` as soon as any
    client touches a name before `kafka init` ran: warn, and refuse when it has happened already."""
    auto = found.auto_create
    mismatched = found.mismatched(wanted)
    if auto is not None and auto.enabled and auto.num_partitions != wanted:
        click.echo(
            f"warning: the broker auto-creates topics (auto.create.topics.enable=true) with "
            f"num.partitions={auto.num_partitions}, not KIDNEYCT_KAFKA_PARTITIONS={wanted}: a client that "
            "touches a topic before `kidneyct kafka init` creates it with that count. Set "
            f"auto.create.topics.enable=false on the brokers (or num.partitions={wanted}).",
            err=True,
        )
    if not mismatched:
        return
    listed = ", ".join(f"{t} has {n}" for t, n in sorted(mismatched.items()))
    message = (
        f"existing topics have another partition count than KIDNEYCT_KAFKA_PARTITIONS={wanted} ({listed}); "
        f"add partitions (kafka-topics.sh --alter --partitions {wanted}) or delete them and run this again"
    )
    if not accept_partitions:
        raise click.ClickException(message + ", or pass --accept-partitions to keep them as they are")
    click.echo(f"warning: {message}", err=True)


@kafka.command()
@click.option(
    "--accept-partitions",
    is_flag=True,
    help="Go on although existing topics have another partition count (e.g. auto-created by the broker).",
)
@click.pass_obj
def init(settings: Settings, accept_partitions: bool) -> None:
    """Create the instances, results and dead-letter topics if they do not exist, and set their
    retention and min.insync.replicas (on existing ones too)."""
    if not settings.uses_kafka:
        raise click.ClickException("KIDNEYCT_KAFKA_BOOTSTRAP is not set: the embedded queue needs no topics")
    topics = [settings.topic_instances, settings.topic_results, settings.topic_dead_letter]
    policy = TopicPolicy(
        partitions=settings.kafka_partitions,
        replication_factor=settings.kafka_replication_factor,
        retention_ms=settings.kafka_retention_ms,
        retention_bytes=settings.kafka_retention_bytes,
    )
    # kafka-python logs every failed connection attempt; the one line below says what went wrong.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    connection = kafka_connection(settings)
    try:
        _check_auto_create(inspect_topics(connection, topics), settings.kafka_partitions, accept_partitions)
        report = prepare_topics(connection, topics, policy)
    except KafkaError as exc:
        reason = str(exc) if str(exc).startswith(type(exc).__name__) else f"{type(exc).__name__}: {exc}"
        raise click.ClickException(
            f"cannot create the topics on {settings.kafka_bootstrap}: {reason}"
        ) from None
    log.info(
        "kafka_topics_ready",
        topics=topics,
        created=report.created,
        updated=report.updated,
        partitions=settings.kafka_partitions,
        **policy.configs(),
    )
