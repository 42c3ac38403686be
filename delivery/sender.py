"""The result sender: sends what the outbox holds, retries with backoff, marks each row's fate.

The retry loop is the outbox itself, so it survives a restart: a failed attempt is counted in its
row and the row is due again after a backoff (tenacity's exponential wait); after the last allowed
attempt it is `failed` for good. Rows are claimed with a lease, so several senders can share one
outbox, and a sender killed mid-delivery leaves rows that are due again when their lease ends. A
resend carries the same SOP Instance UID, so the PACS replaces the object rather than adding one.
Database outages are retried with tenacity too, until stopped.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog
import tenacity
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from delivery.destinations import Destination, parse_destination
from delivery.metrics import SenderMetrics
from delivery.scu import StoreOptions, store_all
from storage.outbox import (
    ClaimedDelivery,
    claim,
    delivery_counts,
    due_delivery_ids,
    mark_attempt_failed,
    mark_delivered,
)

log = structlog.get_logger(__name__)

StoreFn = Callable[[Destination, Sequence[ClaimedDelivery], StoreOptions], dict[int, str | None]]


@dataclass(frozen=True)
class SenderConfig:
    store: StoreOptions
    max_attempts: int = 10
    retry_initial_s: float = 5.0
    retry_max_s: float = 600.0
    poll_s: float = 2.0
    lease_s: float = 300.0
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def backoff_s(wait: tenacity.wait.wait_base, attempts: int) -> float:
    """tenacity's wait before attempt `attempts + 1`, after `attempts` failed ones."""
    state = tenacity.RetryCallState(retry_object=tenacity.Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempts
    return float(wait(state))


class ResultSender:
    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        config: SenderConfig,
        metrics: SenderMetrics,
        store: StoreFn = store_all,
        utcnow: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self._sessions = sessions
        self._config = config
        self._metrics = metrics
        self._store = store
        self._utcnow = utcnow
        self._wait = tenacity.wait_exponential(multiplier=config.retry_initial_s, max=config.retry_max_s)

    def run(self, stop: threading.Event) -> None:
        """Send until `stop` is set; a database outage is waited out."""
        log.info("result_sender_started", max_attempts=self._config.max_attempts)

        def pause(seconds: float) -> None:
            stop.wait(seconds)

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(SQLAlchemyError),
            wait=tenacity.wait_exponential(multiplier=0.5, max=30),
            stop=lambda _state: stop.is_set(),
            sleep=pause,
            before_sleep=lambda state: log.warning(
                "result_sender_database_unavailable", attempt=state.attempt_number
            ),
            reraise=True,
        )
        while not stop.is_set():
            try:
                sent = retrying(self.send_due)
            except SQLAlchemyError:
                break  # stopped during an outage: nothing was lost, the rows wait in the outbox
            if sent == 0:
                stop.wait(self._config.poll_s)
        log.info("result_sender_stopped")

    def send_due(self) -> int:
        """One round: claim due deliveries, send them per destination, record each outcome."""
        claimed = self._claim()
        if not claimed:
            self._update_gauge()
            return 0
        by_destination: dict[str, list[ClaimedDelivery]] = defaultdict(list)
        for d in claimed:
            by_destination[d.destination].append(d)
        outcomes: dict[int, str | None] = {}
        for text, deliveries in by_destination.items():
            try:
                destination = parse_destination(text)
            except ValueError as exc:
                outcomes.update(dict.fromkeys((d.id for d in deliveries), str(exc)))
                continue
            outcomes.update(self._store(destination, deliveries, self._config.store))
        self._record(claimed, outcomes)
        self._update_gauge()
        return len(claimed)

    def _claim(self) -> list[ClaimedDelivery]:
        now = self._utcnow()
        with self._sessions.begin() as session:
            ids = due_delivery_ids(session, now=now, limit=self._config.batch_size)
            taken = [claim(session, delivery_id=i, now=now, lease_s=self._config.lease_s) for i in ids]
        return [t for t in taken if t is not None]

    def _record(self, claimed: Sequence[ClaimedDelivery], outcomes: dict[int, str | None]) -> None:
        now = self._utcnow()
        with self._sessions.begin() as session:
            for d in claimed:
                error = outcomes.get(d.id, "not attempted")
                if error is None:
                    mark_delivered(session, delivery_id=d.id, now=now)
                    continue
                attempts = d.attempts + 1
                give_up = attempts >= self._config.max_attempts
                retry_in = backoff_s(self._wait, attempts)
                mark_attempt_failed(
                    session,
                    delivery_id=d.id,
                    error=error,
                    next_attempt_at=now + dt.timedelta(seconds=retry_in),
                    give_up=give_up,
                    now=now,
                )
        for d in claimed:
            error = outcomes.get(d.id, "not attempted")
            if error is None:
                self._metrics.delivered.labels(kind=d.kind).inc()
                log.info(
                    "result_delivered",
                    destination=d.destination,
                    kind=d.kind,
                    sop_instance_uid=d.sop_instance_uid,
                    attempt=d.attempts + 1,
                )
                continue
            attempts = d.attempts + 1
            self._metrics.attempts_failed.inc()
            if attempts >= self._config.max_attempts:
                self._metrics.failed.inc()
                log.error(
                    "result_delivery_failed",
                    destination=d.destination,
                    kind=d.kind,
                    sop_instance_uid=d.sop_instance_uid,
                    attempts=attempts,
                    error=error,
                )
            else:
                log.warning(
                    "result_delivery_retry",
                    destination=d.destination,
                    kind=d.kind,
                    sop_instance_uid=d.sop_instance_uid,
                    attempt=attempts,
                    retry_in_s=backoff_s(self._wait, attempts),
                    error=error,
                )

    def _update_gauge(self) -> None:
        with self._sessions() as session:
            counts = delivery_counts(session)
        for state, n in counts.items():
            self._metrics.outbox.labels(state=state).set(n)
