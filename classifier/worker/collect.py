"""The collect step: poll the consumer until a batch is full or its time is up (`batching.next_poll`)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

from classifier.worker.batching import BatchPolicy, next_poll
from storage.stream.contract import Consumer, Record, StreamUnavailable

log = structlog.get_logger(__name__)


class Collect:
    """One batch of records; empty when idle, stopping, or the stream is down (waited `retry_s`)."""

    def __init__(
        self,
        *,
        consumer: Consumer,
        policy: BatchPolicy,
        stop: threading.Event,
        clock: Callable[[], float],
        retry_s: float,
    ) -> None:
        self._consumer = consumer
        self._policy = policy
        self._stop = stop
        self._clock = clock
        self._retry_s = retry_s

    def __call__(self) -> list[Record]:
        records: list[Record] = []
        first_at: float | None = None
        while not self._stop.is_set():
            plan = next_poll(self._policy, n_pending=len(records), first_at=first_at, now=self._clock())
            if plan.done:
                break
            try:
                got = self._consumer.poll(plan.max_records, plan.timeout_s)
            except StreamUnavailable as exc:
                log.warning("stream_poll_failed", error=str(exc))
                self._stop.wait(self._retry_s)
                break
            if got and first_at is None:
                first_at = self._clock()
            records.extend(got)
            if not records:
                break  # idle: let the loop sweep studies, look for a new model and check for stop
        return records
