"""The result sender: sends what the outbox holds, retries with backoff, marks each row's fate.

The retry loop is the outbox itself, so it survives a restart: a failed attempt is counted in its
row and the row is due again after a backoff (`storage.failures.Backoff`: the first wait, doubled
each time, at most the longest); after the last allowed attempt it is `failed` for good. Rows are claimed with a lease, so several senders can share one
outbox, and a sender killed mid-delivery leaves rows that are due again when their lease ends (the
sender that takes one over says so). Each outcome is committed as soon as the PACS answers, so a
kill re-sends at most the object in flight, not the round. Each C-STORE starts only after its
delivery's lease is renewed; one whose lease ran out during a long round is not sent (it is given
back, or left to the sender that took it over). A resend carries the same SOP Instance UID, so the
PACS replaces the object rather than adding one. Database outages are waited out with
`storage.failures.retry_outages`, until stopped; a database without the schema stops the sender.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from delivery.destinations import parse_destination
from delivery.metrics import SenderMetrics
from delivery.scu import StoreOptions, store_all
from storage.db.outbox import (
    ClaimedDelivery,
    claim,
    delivery_counts,
    due_delivery_ids,
    leased_deliveries,
    mark_attempt_failed,
    mark_delivered,
    renew_lease,
)
from storage.failures import Abandoned, Backoff, retry_outages

log = structlog.get_logger(__name__)

# store(destination, deliveries, options, on_outcome=..., may_start=...), as `delivery.scu.store_all`.
StoreFn = Callable[..., dict[int, str | None]]


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

    @property
    def backoff(self) -> Backoff:
        """The wait before a failed delivery's next attempt."""
        return Backoff(initial_s=self.retry_initial_s, max_s=self.retry_max_s)


# How a database outage is waited out (not a delivery's backoff: the outbox keeps that one).
DATABASE_BACKOFF = Backoff(initial_s=0.5, max_s=30.0)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


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

    def run(self, stop: threading.Event) -> None:
        """Send until `stop` is set; a database outage is waited out (one line when it starts, one
        when it ends). A database without the schema raises `SchemaMissing`."""
        log.info("result_sender_started", max_attempts=self._config.max_attempts)
        self._log_leased_elsewhere()
        while not stop.is_set():
            try:
                sent = retry_outages(
                    self.send_due,
                    what="send_results",
                    stop=stop,
                    backoff=DATABASE_BACKOFF,
                    log_each_retry=False,
                )
            except Abandoned:
                break  # stopped during an outage: nothing was lost, the rows wait in the outbox
            if sent == 0:
                stop.wait(self._config.poll_s)
        log.info("result_sender_stopped")

    def _log_leased_elsewhere(self) -> None:
        """At start, deliveries another (or a killed) sender still holds: they wait for their lease."""
        try:
            with self._sessions() as session:
                count, last = leased_deliveries(session, now=self._utcnow())
        except SQLAlchemyError:
            return  # the loop waits the outage out
        if count:
            log.warning("result_deliveries_leased", count=count, due_by=last.isoformat() if last else None)

    def send_due(self) -> int:
        """One round: claim due deliveries, send them per destination, record each outcome at once."""
        claimed = self._claim()
        if not claimed:
            self._update_gauge()
            return 0
        for d in claimed:
            if d.abandoned_lease is not None:
                log.warning(
                    "result_delivery_taken_over", **_about(d), lease_ended=d.abandoned_lease.isoformat()
                )
        by_destination: dict[str, list[ClaimedDelivery]] = defaultdict(list)
        for d in claimed:
            by_destination[d.destination].append(d)
        for text, deliveries in by_destination.items():
            self._send(text, deliveries)
        self._update_gauge()
        return len(claimed)

    def _send(self, text: str, deliveries: list[ClaimedDelivery]) -> None:
        try:
            destination = parse_destination(text)
        except ValueError as exc:
            for d in deliveries:
                self._record(d, str(exc))
            return
        self._store(
            destination, deliveries, self._config.store, on_outcome=self._record, may_start=self._renew
        )

    def _renew(self, d: ClaimedDelivery) -> bool:
        """Just before its C-STORE: a fresh lease, or False (not sent) when the round outlived it."""
        now = self._utcnow()
        with self._sessions.begin() as session:
            renewed = renew_lease(
                session, delivery_id=d.id, held_until=d.lease_ends, now=now, lease_s=self._config.lease_s
            )
        if renewed is None:
            log.warning("result_delivery_lease_ran_out", **_about(d), lease_ended=d.lease_ends.isoformat())
        return renewed is not None

    def _claim(self) -> list[ClaimedDelivery]:
        now = self._utcnow()
        with self._sessions.begin() as session:
            ids = due_delivery_ids(session, now=now, limit=self._config.batch_size)
            taken = [claim(session, delivery_id=i, now=now, lease_s=self._config.lease_s) for i in ids]
        return [t for t in taken if t is not None]

    def _record(self, d: ClaimedDelivery, error: str | None) -> None:
        """Commit one delivery's outcome (a kill after this never re-sends it), then log and count it."""
        now = self._utcnow()
        attempts = d.attempts + 1
        give_up = attempts >= self._config.max_attempts
        retry_in = self._config.backoff.after(attempts)
        with self._sessions.begin() as session:
            if error is None:
                mark_delivered(session, delivery_id=d.id, now=now)
            else:
                mark_attempt_failed(
                    session,
                    delivery_id=d.id,
                    error=error,
                    next_attempt_at=now + dt.timedelta(seconds=retry_in),
                    give_up=give_up,
                    now=now,
                )
        self._report(d, error, attempts=attempts, give_up=give_up, retry_in=retry_in)

    def _report(
        self, d: ClaimedDelivery, error: str | None, *, attempts: int, give_up: bool, retry_in: float
    ) -> None:
        if error is None:
            self._metrics.delivered.labels(kind=d.kind).inc()
            log.info("result_delivered", **_about(d), attempt=attempts)
            return
        self._metrics.attempts_failed.inc()
        if give_up:
            self._metrics.failed.inc()
            log.error("result_delivery_failed", **_about(d), attempts=attempts, error=error)
        else:
            log.warning(
                "result_delivery_retry", **_about(d), attempt=attempts, retry_in_s=retry_in, error=error
            )

    def _update_gauge(self) -> None:
        with self._sessions() as session:
            counts = delivery_counts(session)
        for state, n in counts.items():
            self._metrics.outbox.labels(state=state).set(n)


def _about(d: ClaimedDelivery) -> dict[str, str]:
    """What every line about one delivery names: where, what, and which object (UIDs only)."""
    return {"destination": d.destination, "kind": d.kind, "sop_instance_uid": d.sop_instance_uid}
