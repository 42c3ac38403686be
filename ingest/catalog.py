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
from functools import partial
from typing import TypeVar

import structlog
from sqlalchemy.orm import Session, sessionmaker

from common.errors import SetupError
from storage.db.results import (
    InstanceRow,
    SeriesRow,
    StudyRow,
    upsert_instances,
    upsert_series,
    upsert_studies,
)
from storage.db.uid_conflicts import conflicting_events
from storage.failures import Abandoned, Backoff, DataFailure, retry_outages, short_error
from storage.stream.contract import Consumer, Record, StreamUnavailable, next_offsets
from storage.stream.events import InstanceEvent, InvalidEvent, ReleaseHint

log = structlog.get_logger(__name__)

POLL_RECORDS = 256
POLL_TIMEOUT_S = 0.5
# How often idle polls are checked against the broker: a TCP connect, which a TLS listener logs as a
# failed handshake, so not after every empty poll; an outage is noticed within this.
IDLE_PROBE_S = 5.0

BACKOFF = Backoff(initial_s=0.5, max_s=30.0)

T = TypeVar("T")


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
    """The catalogue consumer loop; `run` creates its consumer in the calling thread (waiting until
    the stream answers) and closes it. `is_connected` is its readiness check.

    Every wait (the stream at start, the stream going away later, the database) is
    `storage.failures.retry_outages` with one line when an outage starts and one when it ends.
    """

    def __init__(
        self,
        *,
        make_consumer: Callable[[], Consumer],
        sessions: sessionmaker[Session],
        stream_reachable: Callable[[], bool] | None = None,
        backoff: Backoff = BACKOFF,
        utcnow: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._make_consumer = make_consumer
        # A silent probe (a TCP connect to the broker) before each attempt, and after empty polls
        # (every IDLE_PROBE_S, each one during an outage): kafka-python logs about 25 lines for every
        # consumer it fails to bootstrap, and its poll returns nothing, without an error, while the
        # broker is gone.
        self._stream_reachable = stream_reachable
        self._sessions = sessions
        self._backoff = backoff
        self._utcnow = utcnow
        self._connected = threading.Event()
        self._next_idle_probe = 0.0  # time.monotonic()
        self.catalogued = 0  # instances recorded (for tests and logs)

    def is_connected(self) -> bool:
        """True while the consumer is made and its last poll reached the stream, until `run` ends."""
        return self._connected.is_set()

    def run(self, stop: threading.Event) -> None:
        """Record events until `stop` is set; a batch in hand during an outage is never committed.
        A database without the kidneyct schema raises `SchemaMissing`."""
        try:
            consumer = self._retry(self._attempt, "catalog_connect", stop)
        except Abandoned:
            log.info("catalog_stopped", catalogued=self.catalogued, connected=False)
            return
        self._connected.set()
        log.info("catalog_started")
        try:
            self._consume(consumer, stop)
        except Abandoned:
            pass  # stopped during an outage: nothing committed, re-delivered later
        finally:
            self._connected.clear()
            consumer.close()
            log.info("catalog_stopped", catalogued=self.catalogued)

    def _consume(self, consumer: Consumer, stop: threading.Event) -> None:
        while not stop.is_set():
            records = self._retry(partial(self._poll, consumer), "catalog_poll", stop)
            self._connected.set()
            if records:
                self._record(parse_records(records), stop)
                self._commit(consumer, records)

    def _retry(self, action: Callable[[], T], what: str, stop: threading.Event) -> T:
        """`action`, waiting out outages; not ready meanwhile when it is the stream that is out."""
        return retry_outages(
            action, what=what, stop=stop, backoff=self._backoff, on_retry=self._lost, log_each_retry=False
        )

    def _lost(self, exc: BaseException) -> None:
        if isinstance(exc, StreamUnavailable):
            self._connected.clear()

    def _attempt(self) -> Consumer:
        self._probe()
        return self._make_consumer()

    def _poll(self, consumer: Consumer) -> list[Record]:
        records = consumer.poll(POLL_RECORDS, POLL_TIMEOUT_S)
        if not records and (not self.is_connected() or time.monotonic() >= self._next_idle_probe):
            self._next_idle_probe = time.monotonic() + IDLE_PROBE_S
            self._probe()
        return records

    def _probe(self) -> None:
        if self._stream_reachable is not None and not self._stream_reachable():
            raise StreamUnavailable("the stream's servers do not accept connections")

    def _record(self, events: list[InstanceEvent], stop: threading.Event) -> None:
        """Record `events` in one transaction; when one of them cannot be stored (a value that does
        not fit its column), one by one, leaving that one out (the worker dead-letters it)."""
        try:
            self._retry(partial(self._store, events), "catalog_record", stop)
        except DataFailure:
            for event in events:
                try:
                    self._retry(partial(self._store, [event]), "catalog_record", stop)
                except DataFailure as exc:
                    log.warning(
                        "catalog_skipped_unstorable_event",
                        sop_instance_uid=event.sop_instance_uid,
                        error=short_error(exc.__cause__ or exc),
                    )

    def _store(self, events: list[InstanceEvent]) -> None:
        with self._sessions.begin() as session:
            record_events(session, events=events, now=self._utcnow())
        self.catalogued += len(events)
        log.info("instances_catalogued", count=len(events))

    def _commit(self, consumer: Consumer, records: list[Record]) -> None:
        try:
            consumer.commit(next_offsets(records))
        except StreamUnavailable as exc:  # re-delivery only repeats idempotent upserts
            log.warning("catalog_commit_failed", error=str(exc))


def start_catalog_thread(catalog: Catalog, stop: threading.Event) -> threading.Thread:
    """Run `catalog` in a daemon thread until `stop` is set; a setup error (no schema) ends it with
    one line (and `/readyz` says not ready), not a traceback."""

    def run() -> None:
        try:
            catalog.run(stop)
        except SetupError as exc:
            log.error("catalog_failed", error=str(exc))

    thread = threading.Thread(target=run, name="catalog", daemon=True)
    thread.start()
    return thread
