"""The catalogue: every accepted instance becomes a row (state `received`) as soon as its event is out.

Instance rows are what `kidneyct label` and `kidneyct train` look labelled instances up in. The
classifier worker writes them too, but only once a model is active; a new site has none, so without
the catalogue its first labels would never find their instances. The catalogue reads the listener's
instance events in a consumer group of its own (`KIDNEYCT_CATALOG_GROUP`), upserts studies, series
and instances, and commits its offsets only after the database commit. It never overwrites what a
worker wrote (`storage.db.results.upsert_instances`), and the worker's own group is untouched, so
every instance is still classified. `kidneyct listen` and `kidneyct serve` run it in a thread by
default (`KIDNEYCT_CATALOG_IN_LISTENER`); `kidneyct catalog` runs it on its own.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from storage.db.results import (
    InstanceRow,
    SeriesRow,
    StudyRow,
    upsert_instances,
    upsert_series,
    upsert_studies,
)
from storage.db.uid_conflicts import conflicting_events
from storage.stream.contract import Consumer, Record, StreamUnavailable, next_offsets
from storage.stream.events import InstanceEvent, InvalidEvent, ReleaseHint

log = structlog.get_logger(__name__)

POLL_RECORDS = 256
POLL_TIMEOUT_S = 0.5


def record_events(session: Session, *, events: list[InstanceEvent], now: dt.datetime) -> None:
    """Upsert the studies, series and instances of `events` (state `received`); never commits.
    An event whose SOP Instance UID belongs to another study is left out (`storage.db.uid_conflicts`)."""
    events = _without_uid_conflicts(session, events)
    if not events:
        return
    received = {e.sop_instance_uid: e.received_at for e in events}
    study_ids = upsert_studies(
        session,
        studies=[StudyRow(e.study_instance_uid, None, received[e.sop_instance_uid]) for e in events],
    )
    series_ids = upsert_series(
        session,
        series=[SeriesRow(e.series_instance_uid, e.study_instance_uid, e.modality) for e in events],
        study_ids=study_ids,
    )
    upsert_instances(
        session,
        instances=[
            InstanceRow.of_event(
                e,
                received_at=received[e.sop_instance_uid],
                state="received",
                frames=e.number_of_frames if isinstance(e.number_of_frames, int) else 1,
            )
            for e in events
        ],
        series_ids=series_ids,
        now=now,
    )


def _without_uid_conflicts(session: Session, events: list[InstanceEvent]) -> list[InstanceEvent]:
    conflicts = conflicting_events(session, events, action="not_catalogued")
    return [e for e in events if (e.sop_instance_uid, e.study_instance_uid) not in conflicts]


def parse_records(records: list[Record]) -> list[InstanceEvent]:
    """The valid events of `records`; an invalid one is logged and skipped (the worker dead-letters it).
    Release hints share the stream and are not instances: skipped quietly."""
    events = []
    for record in records:
        if ReleaseHint.of_message(record.value) is not None:
            continue
        try:
            events.append(InstanceEvent.from_json(record.value))
        except InvalidEvent as exc:
            log.warning("catalog_skipped_invalid_event", offset=record.offset, error=str(exc))
    return events


class Catalog:
    """The catalogue consumer loop; `run` creates its consumer in the calling thread (retrying
    until the stream answers) and closes it. `is_connected` is its readiness check."""

    def __init__(
        self,
        *,
        make_consumer: Callable[[], Consumer],
        sessions: sessionmaker[Session],
        stream_reachable: Callable[[], bool] | None = None,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
        utcnow: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._make_consumer = make_consumer
        # A silent probe (a TCP connect to the broker) before each attempt: kafka-python logs about
        # 25 lines for every consumer it fails to bootstrap.
        self._stream_reachable = stream_reachable
        self._sessions = sessions
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._utcnow = utcnow
        self._connected = threading.Event()
        self.catalogued = 0  # instances recorded (for tests and logs)

    def is_connected(self) -> bool:
        """True once the consumer is made, until `run` ends."""
        return self._connected.is_set()

    def run(self, stop: threading.Event) -> None:
        """Record events until `stop` is set; a batch in hand during an outage is never committed."""
        consumer = self._connect(stop)
        if consumer is None:
            log.info("catalog_stopped", catalogued=self.catalogued)
            return
        log.info("catalog_started")
        try:
            while not stop.is_set():
                try:
                    records = consumer.poll(POLL_RECORDS, POLL_TIMEOUT_S)
                except StreamUnavailable as exc:
                    log.warning("catalog_poll_failed", error=str(exc))
                    stop.wait(self._retry_initial_s)
                    continue
                if records and not self._record(records, stop):
                    break  # stopped during a database outage: nothing committed, re-delivered later
                if records:
                    self._commit(consumer, records)
        finally:
            self._connected.clear()
            consumer.close()
            log.info("catalog_stopped", catalogued=self.catalogued)

    def _connect(self, stop: threading.Event) -> Consumer | None:
        """The consumer, once the stream answers (backing off between attempts); None if stopped first.
        One line when the stream does not answer, one when it finally does."""
        delay, attempts, started = self._retry_initial_s, 0, time.monotonic()
        while not stop.is_set():
            attempts += 1
            try:
                consumer = self._attempt()
            except StreamUnavailable as exc:
                if attempts == 1:
                    log.warning(
                        "catalog_stream_unavailable", error=str(exc), retrying_every_max_s=self._retry_max_s
                    )
                if stop.wait(delay):
                    break
                delay = min(delay * 2, self._retry_max_s)
                continue
            if attempts > 1:
                log.info(
                    "catalog_stream_connected",
                    attempts=attempts,
                    waited_s=round(time.monotonic() - started, 1),
                )
            self._connected.set()
            return consumer
        if attempts > 1:
            log.warning(
                "catalog_never_connected", attempts=attempts, waited_s=round(time.monotonic() - started, 1)
            )
        return None

    def _attempt(self) -> Consumer:
        if self._stream_reachable is not None and not self._stream_reachable():
            raise StreamUnavailable("the stream's servers do not accept connections")
        return self._make_consumer()

    def _record(self, records: list[Record], stop: threading.Event) -> bool:
        events = parse_records(records)
        delay = self._retry_initial_s
        while True:
            try:
                with self._sessions.begin() as session:
                    record_events(session, events=events, now=self._utcnow())
            except SQLAlchemyError as exc:
                log.warning("catalog_database_unavailable", error=type(exc).__name__, retry_in_s=delay)
                if stop.wait(delay):
                    return False
                delay = min(delay * 2, self._retry_max_s)
                continue
            self.catalogued += len(events)
            log.info("instances_catalogued", count=len(events))
            return True

    def _commit(self, consumer: Consumer, records: list[Record]) -> None:
        try:
            consumer.commit(next_offsets(records))
        except StreamUnavailable as exc:  # re-delivery only repeats idempotent upserts
            log.warning("catalog_commit_failed", error=str(exc))


def start_catalog_thread(catalog: Catalog, stop: threading.Event) -> threading.Thread:
    """Run `catalog` in a daemon thread until `stop` is set."""
    thread = threading.Thread(target=catalog.run, args=(stop,), name="catalog", daemon=True)
    thread.start()
    return thread
