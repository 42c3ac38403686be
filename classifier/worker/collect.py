"""The collect step: poll the consumer until a batch is full, the stream has nothing more waiting, or its
time is up (`batching.next_poll`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from classifier.worker.batching import BatchPolicy, next_poll
from storage.stream.contract import Consumer, Record, StreamUnavailable

log = structlog.get_logger(__name__)


@dataclass(frozen=True, kw_only=True)
class Collect:
    """One batch of records; empty when idle, stopping, or the stream is down (waited `retry_s`)."""

    consumer: Consumer
    policy: BatchPolicy
    stop: threading.Event
    clock: Callable[[], float]
    retry_s: float

    def __call__(self, *, wait: bool = True) -> list[Record]:
        """`wait=False` when a batch is already in hand: take only what is waiting, never idle."""
        records: list[Record] = []
        first_at: float | None = None
        drained = False
        while not self.stop.is_set():
            plan = next_poll(
                self.policy,
                n_pending=len(records),
                first_at=first_at,
                now=self.clock(),
                drained=drained,
                wait=wait,
            )
            if plan.done:
                break
            try:
                got = self.consumer.poll(plan.max_records, plan.timeout_s)
            except StreamUnavailable as exc:
                log.warning("stream_poll_failed", error=str(exc))
                self.stop.wait(self.retry_s)
                break
            if got and first_at is None:
                first_at = self.clock()
            records.extend(got)
            drained = not got
            if not records:
                break  # idle: let the loop sweep studies, look for a new model and check for stop
        return records
