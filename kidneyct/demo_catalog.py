"""The demo's catalogue step: record received instances in the database before any model exists.

Instance rows are normally written by the classifier worker, which needs an active model; the
trainer, though, finds labelled instances through those rows. For the very first model the demo
reads the listener's instance events in a consumer group of its own and records each instance
(state `received`), committing its offsets only after the database commit. The worker's own group
is untouched, so it still classifies every instance later, and its upserts keep one row each.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

import structlog
from sqlalchemy.orm import Session, sessionmaker

from storage.events import InstanceEvent, InvalidEvent
from storage.results import InstanceRow, SeriesRow, StudyRow, upsert_instances, upsert_series, upsert_studies
from storage.stream import Consumer, next_offsets

log = structlog.get_logger(__name__)


def record_events(session: Session, *, events: list[InstanceEvent], now: dt.datetime) -> None:
    """Upsert the studies, series and instances of `events` (state `received`); never commits."""
    received = {e.sop_instance_uid: dt.datetime.fromisoformat(e.received_at) for e in events}
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
            InstanceRow(
                sop_instance_uid=e.sop_instance_uid,
                series_instance_uid=e.series_instance_uid,
                sop_class_uid=e.sop_class_uid,
                transfer_syntax_uid=e.transfer_syntax_uid,
                archive_uri=e.archive_uri,
                sha256=e.sha256,
                size_bytes=e.size_bytes,
                calling_ae=e.calling_ae,
                instance_number=e.instance_number,
                number_of_frames=e.number_of_frames,
                received_at=received[e.sop_instance_uid],
                state="received",
            )
            for e in events
        ],
        series_ids=series_ids,
        now=now,
    )


def catalogue_until(
    consumer: Consumer,
    sessions: sessionmaker[Session],
    *,
    expected: set[str],
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
    utcnow: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> set[str]:
    """Record events until every SOP Instance UID in `expected` is seen; returns those seen.

    Raises TimeoutError naming how many are missing when the deadline passes.
    """
    seen: set[str] = set()
    deadline = clock() + timeout_s
    while not expected <= seen:
        if clock() > deadline:
            raise TimeoutError(
                f"{len(expected - seen)} of {len(expected)} instances never arrived in the stream"
            )
        records = consumer.poll(256, 1.0)
        if not records:
            continue
        events = []
        for record in records:
            try:
                events.append(InstanceEvent.from_json(record.value))
            except InvalidEvent as exc:
                log.warning("catalogue_skipped_invalid_event", offset=record.offset, error=str(exc))
        with sessions.begin() as session:
            record_events(session, events=events, now=utcnow())
        consumer.commit(next_offsets(records))
        seen.update(e.sop_instance_uid for e in events)
    return seen
