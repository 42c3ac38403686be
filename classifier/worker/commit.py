"""The commit step, always last: offsets of what is written (rows committed, results published).

A failed commit is retried with the next one (or when idle); after `MAX_COMMIT_ATTEMPTS` the
offsets are dropped: most likely a rebalance moved the partitions away and their new owner replays
them, which writes nothing new (every write is idempotent).
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

from storage.stream.contract import Consumer, Record, StreamUnavailable, TopicPartition, next_offsets

log = structlog.get_logger(__name__)

MAX_COMMIT_ATTEMPTS = 5


class CommitOffsets:
    def __init__(self, consumer: Consumer) -> None:
        self._consumer = consumer
        self._uncommitted: dict[TopicPartition, int] = {}
        self._failures = 0

    @property
    def pending(self) -> dict[TopicPartition, int]:
        return dict(self._uncommitted)

    def add(self, records: Sequence[Record]) -> None:
        """Note `records` as done: call only once their rows are committed and results published."""
        for tp, offset in next_offsets(records).items():
            self._uncommitted[tp] = max(offset, self._uncommitted.get(tp, 0))

    def __call__(self) -> None:
        """Commit what is noted; on failure keep it for the next call."""
        if not self._uncommitted:
            return
        try:
            self._consumer.commit(dict(self._uncommitted))
        except StreamUnavailable as exc:
            self._failures += 1
            log.warning("offset_commit_failed", error=str(exc), attempt=self._failures)
            if self._failures >= MAX_COMMIT_ATTEMPTS:
                self._uncommitted.clear()
                self._failures = 0
            return
        self._uncommitted.clear()
        self._failures = 0
