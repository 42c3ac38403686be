"""The event-stream contract shared by Kafka and the embedded database queue.

A `Publisher.publish` returns only once the event is durable (Kafka: acknowledged by all in-sync
replicas; embedded: committed to the database), so the listener may answer C-STORE success after it.
A `Consumer` hands out records and commits offsets only when told to, after the caller's database
commit, so a crash replays records rather than losing them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


class StreamError(Exception):
    """Base of stream failures."""


class StreamUnavailable(StreamError):
    """The broker or queue cannot be reached or did not acknowledge in time: recoverable, retry later."""


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


@dataclass(frozen=True, slots=True)
class TopicPartition:
    topic: str
    partition: int


def next_offsets(records: Sequence[Record]) -> dict[TopicPartition, int]:
    """The offsets to commit after processing `records`: one past the highest offset per partition."""
    offsets: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
    return offsets


class Publisher(Protocol):
    def publish(self, topic: str, key: bytes, value: bytes) -> None:
        """Append one event and block until it is durable; raise `StreamUnavailable` otherwise."""

    def close(self) -> None:
        """Flush what is pending and release the connection."""


class Consumer(Protocol):
    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        """Up to `max_records` records, waiting at most `timeout_s` for the first one."""

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit the next offsets to read; raise `StreamUnavailable` when that fails."""

    def close(self) -> None:
        """Leave the group and release the connection (uncommitted records are re-delivered)."""

    def backlog(self) -> int | None:
        """How many records wait after this consumer's position on its topics or partitions; None
        when not known yet (Kafka: until a fetch brought the high-water marks). May raise what
        `poll` raises."""
