"""The collect step: a batch by size or time, nothing when idle, nothing (after a wait) when the stream is down."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

from classifier_kit import MemoryConsumer
from structlog.testing import capture_logs

from classifier.worker.batching import BatchPolicy
from classifier.worker.collect import Collect
from storage.stream.contract import Record, StreamUnavailable, TopicPartition


def test_a_full_batch_is_collected_at_its_size() -> None:
    """Ten waiting, batches of four: four now, the rest later."""
    consumer = MemoryConsumer()
    for i in range(10):
        consumer.append(str(i).encode())
    collect = Collect(
        consumer=consumer,
        policy=BatchPolicy(max_size=4, max_wait_s=5.0),
        stop=threading.Event(),
        clock=time.monotonic,
        retry_s=0.01,
    )
    assert [r.offset for r in collect()] == [0, 1, 2, 3]
    assert [r.offset for r in collect()] == [4, 5, 6, 7]


def test_a_partial_batch_is_collected_when_its_time_is_up_and_idle_is_empty() -> None:
    """Two records and a short wait: those two; then nothing is waiting: an empty batch."""
    consumer = MemoryConsumer()
    consumer.append(b"a")
    consumer.append(b"b")
    policy = BatchPolicy(max_size=8, max_wait_s=0.05, idle_wait_s=0.01)
    collect = Collect(
        consumer=consumer, policy=policy, stop=threading.Event(), clock=time.monotonic, retry_s=0.01
    )
    assert [r.value for r in collect()] == [b"a", b"b"]
    assert collect() == []


def test_with_a_batch_in_hand_collect_does_not_wait_for_a_first_record() -> None:
    """`wait=False` returns at once when nothing is waiting (a long idle wait would hold the batch in hand)."""
    policy = BatchPolicy(max_size=8, max_wait_s=5.0, idle_wait_s=5.0)
    collect = Collect(
        consumer=MemoryConsumer(), policy=policy, stop=threading.Event(), clock=time.monotonic, retry_s=0.01
    )
    started = time.monotonic()
    assert collect(wait=False) == []
    assert time.monotonic() - started < 1.0


def test_a_partial_batch_closes_when_nothing_more_is_waiting() -> None:
    """Two waiting and a 5 s max wait: the batch is those two at once, not after 5 s."""
    consumer = MemoryConsumer()
    consumer.append(b"a")
    consumer.append(b"b")
    policy = BatchPolicy(max_size=8, max_wait_s=5.0, idle_wait_s=5.0)
    collect = Collect(
        consumer=consumer, policy=policy, stop=threading.Event(), clock=time.monotonic, retry_s=0.01
    )
    started = time.monotonic()
    assert [r.value for r in collect()] == [b"a", b"b"]
    assert time.monotonic() - started < 1.0


class DownConsumer(MemoryConsumer):
    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        raise StreamUnavailable("broker down")

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        raise StreamUnavailable("broker down")


def test_a_stream_outage_gives_an_empty_batch_after_a_wait() -> None:
    """The loop goes on (sweeps, stop checks); the outage is logged, nothing is lost."""
    collect = Collect(
        consumer=DownConsumer(),
        policy=BatchPolicy(max_size=4, max_wait_s=0.05),
        stop=threading.Event(),
        clock=time.monotonic,
        retry_s=0.01,
    )
    with capture_logs() as logs:
        assert collect() == []
    assert [e["event"] for e in logs] == ["stream_poll_failed"]


def test_nothing_is_collected_once_stopped() -> None:
    consumer = MemoryConsumer()
    consumer.append(b"a")
    stop = threading.Event()
    stop.set()
    collect = Collect(
        consumer=consumer,
        policy=BatchPolicy(max_size=4, max_wait_s=0.05),
        stop=stop,
        clock=time.monotonic,
        retry_s=0.01,
    )
    assert collect() == []
