"""The commit step: the next offset per partition, committed only when told, kept through failures."""

from __future__ import annotations

from collections.abc import Mapping

from structlog.testing import capture_logs
from worker_steps_kit import record

from classifier.worker.commit import MAX_COMMIT_ATTEMPTS, CommitOffsets
from storage.stream.contract import Record, StreamUnavailable, TopicPartition

TP0, TP1 = TopicPartition("instances", 0), TopicPartition("instances", 1)


class Consumer:
    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.commits: list[dict[TopicPartition, int]] = []

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        return []

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if self.failures:
            self.failures -= 1
            raise StreamUnavailable("broker down")
        self.commits.append(dict(offsets))

    def backlog(self) -> int | None:
        return None

    def close(self) -> None:
        pass


def test_commits_one_past_the_highest_offset_per_partition_once() -> None:
    """Offsets noted over several calls are committed as one past the highest, then forgotten."""
    consumer = Consumer()
    commit = CommitOffsets(consumer)
    commit()  # nothing noted: nothing committed
    commit.add([record(4, b""), record(2, b""), record(7, b"", partition=1)])
    commit.add([record(3, b"")])
    assert consumer.commits == []  # noted is not committed
    commit()
    commit()
    assert consumer.commits == [{TP0: 5, TP1: 8}]


def test_a_failed_commit_is_kept_for_the_next_and_dropped_after_the_last_attempt() -> None:
    """A broker that refuses keeps the offsets for the next call; after MAX_COMMIT_ATTEMPTS they are
    dropped (a rebalance most likely moved the partition; its new owner replays, writing nothing new)."""
    consumer = Consumer(failures=1)
    commit = CommitOffsets(consumer)
    commit.add([record(0, b"")])
    with capture_logs() as logs:
        commit()
    assert commit.pending == {TP0: 1} and [e["event"] for e in logs] == ["offset_commit_failed"]
    commit()
    assert consumer.commits == [{TP0: 1}] and commit.pending == {}

    consumer = Consumer(failures=MAX_COMMIT_ATTEMPTS)
    commit = CommitOffsets(consumer)
    commit.add([record(0, b"")])
    for _ in range(MAX_COMMIT_ATTEMPTS):
        commit()
    assert commit.pending == {} and consumer.commits == []
