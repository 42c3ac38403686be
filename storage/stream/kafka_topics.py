"""Topics made for replay: partitions, replication, retention and `min.insync.replicas`, and a look at
the broker's auto-creation of topics (which makes topics with its own partition count behind our back).

`kidneyct kafka init` calls `prepare_topics`: it creates the missing topics with the policy, sets the
policy's configs on the existing ones, and reports what it found. Retention bounds how far back a
consumer group can replay the topic; `kidneyct reprocess` does not need it (it reads the catalogue).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from storage.stream.kafka_stream import KafkaConnection


@dataclass(frozen=True, slots=True)
class TopicPolicy:
    partitions: int
    replication_factor: int
    retention_ms: int  # -1: keep forever
    retention_bytes: int  # per partition; -1: no size limit

    @property
    def min_insync_replicas(self) -> int:
        """One fewer than the replicas (at least 1): `acks=all` then survives one broker down and
        never acknowledges a write that only one broker holds when there are three or more."""
        return max(1, self.replication_factor - 1)

    def configs(self) -> dict[str, str]:
        return {
            "retention.ms": str(self.retention_ms),
            "retention.bytes": str(self.retention_bytes),
            "min.insync.replicas": str(self.min_insync_replicas),
        }


@dataclass(frozen=True, slots=True)
class BrokerAutoCreate:
    enabled: bool
    num_partitions: int | None


@dataclass
class TopicsReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    partitions: dict[str, int] = field(default_factory=dict)  # existing topics' partition counts
    auto_create: BrokerAutoCreate | None = None

    def mismatched(self, wanted: int) -> dict[str, int]:
        """Existing topics whose partition count is not the configured one (likely auto-created)."""
        return {t: n for t, n in self.partitions.items() if n != wanted}


def broker_auto_create(admin: KafkaAdminClient) -> BrokerAutoCreate:
    """Whether a broker auto-creates topics, and with how many partitions (first broker's static config)."""
    broker = str(admin.describe_cluster()["brokers"][0]["broker_id"])
    described = admin.describe_configs(
        [ConfigResource(ConfigResourceType.BROKER, broker)], config_filter="all"
    )
    configs = described["broker"][broker]

    def value(name: str) -> str | None:
        entry = configs.get(name)
        return entry.get("value") if isinstance(entry, dict) else None

    partitions = value("num.partitions")
    return BrokerAutoCreate(
        enabled=(value("auto.create.topics.enable") or "true").lower() == "true",
        num_partitions=int(partitions) if partitions is not None else None,
    )


def partition_counts(admin: KafkaAdminClient, topics: list[str]) -> dict[str, int]:
    described = admin.describe_topics(topics)
    return {
        d.get("name") or d.get("topic"): len(d["partitions"]) for d in described if not d.get("error_code")
    }


def inspect_topics(connection: KafkaConnection, topics: list[str]) -> TopicsReport:
    """What exists already and how the broker auto-creates, changing nothing."""
    admin = KafkaAdminClient(**connection.options())
    try:
        existing = [t for t in topics if t in set(admin.list_topics())]
        return TopicsReport(
            partitions=partition_counts(admin, existing) if existing else {},
            auto_create=broker_auto_create(admin),
        )
    finally:
        admin.close()


def prepare_topics(connection: KafkaConnection, topics: list[str], policy: TopicPolicy) -> TopicsReport:
    """Create the missing topics with the policy and set its configs on the existing ones."""
    admin = KafkaAdminClient(**connection.options())
    report = TopicsReport()
    try:
        existing = set(admin.list_topics())
        for name in topics:
            if name in existing:
                continue
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            name,
                            num_partitions=policy.partitions,
                            replication_factor=policy.replication_factor,
                            topic_configs=policy.configs(),
                        )
                    ]
                )
                report.created.append(name)
            except TopicAlreadyExistsError:
                existing.add(name)  # created meanwhile by another process: configure it below
        update = [t for t in topics if t in existing]
        if update:
            admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, t, configs=policy.configs()) for t in update]
            )
            report.updated = update
            report.partitions = partition_counts(admin, update)
        return report
    finally:
        admin.close()
