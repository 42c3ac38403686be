"""`kidneyct kafka init` against the real broker: retention and min.insync.replicas from the settings,
and a broker that auto-creates topics with another partition count is named (refused once it did)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from click.testing import CliRunner
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

from kidneyct.cli import cli
from storage.stream.kafka_stream import KafkaConnection, KafkaPublisher

pytestmark = [pytest.mark.kafka]


def topic_configs(connection: KafkaConnection, topic: str) -> dict[str, str]:
    """A topic's effective configs, as the broker reports them."""
    admin = KafkaAdminClient(**connection.options())
    try:
        described = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all"
        )
        return {k: str(v.get("value")) for k, v in described["topic"][topic].items() if isinstance(v, dict)}
    finally:
        admin.close()


def _env(bootstrap: str, unique_name: Callable[[str], str], **extra: str) -> dict[str, str]:
    return {
        "KIDNEYCT_KAFKA_BOOTSTRAP": bootstrap,
        "KIDNEYCT_TOPIC_INSTANCES": unique_name("instances"),
        "KIDNEYCT_TOPIC_RESULTS": unique_name("results"),
        "KIDNEYCT_TOPIC_DEAD_LETTER": unique_name("dlq"),
        "KIDNEYCT_KAFKA_PARTITIONS": "2",
        **extra,
    }


def _init(env: dict[str, str], *args: str):  # noqa: ANN202 - click's Result
    return CliRunner().invoke(cli, ["kafka", "init", *args], env=env)


def test_init_sets_retention_and_min_insync_and_updates_them(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    """New topics get retention.ms/bytes and min.insync.replicas from the settings; a second run with
    other values changes the existing topics; the broker's auto-creation with 1 partition is named."""
    env = _env(kafka_bootstrap, unique_name, KIDNEYCT_KAFKA_RETENTION_MS="86400000")
    first = _init(env)
    assert first.exit_code == 0, first.output
    assert "auto.create.topics.enable=true" in first.output and "num.partitions=1" in first.output
    connection = KafkaConnection(kafka_bootstrap)
    configs = topic_configs(connection, env["KIDNEYCT_TOPIC_INSTANCES"])
    assert configs["retention.ms"] == "86400000"
    assert configs["retention.bytes"] == "-1"
    assert configs["min.insync.replicas"] == "1"

    env |= {"KIDNEYCT_KAFKA_RETENTION_MS": "3600000", "KIDNEYCT_KAFKA_RETENTION_BYTES": "10485760"}
    second = _init(env)
    assert second.exit_code == 0, second.output
    for topic in (env["KIDNEYCT_TOPIC_INSTANCES"], env["KIDNEYCT_TOPIC_DEAD_LETTER"]):
        configs = topic_configs(connection, topic)
        assert (configs["retention.ms"], configs["retention.bytes"]) == ("3600000", "10485760")


def test_init_refuses_topics_the_broker_auto_created(
    kafka_bootstrap: str, unique_name: Callable[[str], str]
) -> None:
    """A publish before `kafka init` makes the broker create the topic with its 1 partition: init
    refuses, naming the topic and the count, unless --accept-partitions."""
    env = _env(kafka_bootstrap, unique_name)
    publisher = KafkaPublisher(KafkaConnection(kafka_bootstrap))
    publisher.publish(env["KIDNEYCT_TOPIC_INSTANCES"], b"k", b"v")  # auto-created with 1 partition
    publisher.close()
    refused = _init(env)
    assert refused.exit_code == 1
    assert f"{env['KIDNEYCT_TOPIC_INSTANCES']} has 1" in refused.output
    assert "--accept-partitions" in refused.output
    accepted = _init(env, "--accept-partitions")
    assert accepted.exit_code == 0, accepted.output
    assert topic_configs(KafkaConnection(kafka_bootstrap), env["KIDNEYCT_TOPIC_RESULTS"])[
        "retention.ms"
    ] == str(7 * 24 * 3600 * 1000)
