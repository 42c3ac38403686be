"""Queue archived instances for classification under a model version (`kidneyct reprocess`, and
`kidneyct models promote --backfill-since`).

The instances come from the catalogue (the `instances` table), so a reprocess reaches as far back as
the archive does, whatever the topic keeps. Each becomes a reprocess event on the instances topic
(or the embedded queue), keyed by its study like a live event; workers classify it under the version
it names. Instances the version already classified are not queued again, and a re-delivered or
repeated event adds no row (predictions are unique per instance, frame and version): running the
same reprocess twice adds nothing.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy.orm import Session, sessionmaker

from common.progress import Advance
from common.vocabulary import is_valid_uid
from kidneyct.settings import Settings
from kidneyct.streams import make_publisher
from storage.db.model_versions import get_active_model_version, get_model_version
from storage.db.reprocess import Position, Selection, count_selected, select_for_reprocess
from storage.stream.contract import Publisher
from storage.stream.events import InstanceEvent

log = structlog.get_logger(__name__)

PUBLISH_WINDOW = 256
PAGE_ROWS = 5000  # catalogue rows read per page: memory stays flat however large the selection
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class ReprocessError(ValueError):
    """The reprocess cannot be queued; the message says why."""


@dataclass(frozen=True, slots=True)
class Queued:
    model_version: str
    instances: int
    studies: int
    already_done: int


def parse_duration(text: str) -> dt.timedelta:
    """`30m`, `24h`, `7d`, `2w` (also `90s`) as a timedelta."""
    match = _DURATION.match(text)
    if match is None:
        raise ReprocessError(f"not a duration: {text!r} (use e.g. 30m, 24h, 7d, 2w)")
    return dt.timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def parse_when(text: str, *, now: dt.datetime) -> dt.datetime:
    """An ISO 8601 date or time (UTC unless it says otherwise), or a duration back from `now`."""
    try:
        return now - parse_duration(text)
    except ReprocessError:
        pass
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ReprocessError(
            f"not a time: {text!r} (use an ISO date or time such as 2026-11-01 or 2026-11-01T08:00, "
            "or a duration back from now such as 7d)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def _target(session: Session, model_version: str | None) -> tuple[int, str]:
    if model_version is None:
        row = get_active_model_version(session)
        if row is None:
            raise ReprocessError("no active model version: name one with --model VERSION")
    else:
        row = get_model_version(session, version=model_version)
        if row is None:
            raise ReprocessError(f"no model version {model_version!r} (see `kidneyct models list`)")
    return row.id, row.version


def queue_reprocess(
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    selection: Selection,
    model_version: str | None,
    progress: Advance | None = None,
    page_rows: int = PAGE_ROWS,
) -> Queued:
    """Publish a reprocess event for every selected instance not yet classified under the version
    (default: the active one), a page of the catalogue at a time; returns what was queued."""
    if selection.empty:
        raise ReprocessError(
            "select something: --study, --accession, --received-since/--received-until, or --all"
        )
    not_uids = [uid for uid in selection.study_uids if not is_valid_uid(uid)]
    if not_uids:
        raise ReprocessError(f"--study {not_uids[0]!r} is not a DICOM UID (digits and dots, e.g. 1.2.840.1)")
    with sessions() as session:
        version_id, version = _target(session, model_version)
        total = count_selected(session, selection=selection)
    publisher = make_publisher(settings, sessions)
    instances = already_done = read = 0
    studies: set[str] = set()
    after: Position | None = None
    try:
        while True:
            with sessions() as session:  # a short read per page, never one transaction for the archive
                page = select_for_reprocess(
                    session, selection=selection, model_version_id=version_id, after=after, limit=page_rows
                )
            if page.last is None:
                break
            base = read + page.already_done  # the page's classified rows count as done at once

            def advance(published: int, base: int = base) -> None:
                if progress is not None:
                    progress(min(base + published, total), max(total, base + published))

            advance(0)
            _publish_all(publisher, settings.topic_instances, page.events, version, advance)
            instances += len(page.events)
            already_done += page.already_done
            studies.update(e.study_instance_uid for e in page.events)
            read = base + len(page.events)
            after = page.last
    finally:
        publisher.close()
    queued = Queued(
        model_version=version, instances=instances, studies=len(studies), already_done=already_done
    )
    log.info(
        "reprocess_queued",
        model_version=version,
        instances=queued.instances,
        studies=queued.studies,
        already_done=queued.already_done,
    )
    return queued


def _publish_all(
    publisher: Publisher,
    topic: str,
    events: list[InstanceEvent],
    version: str,
    published: Callable[[int], None],
) -> None:
    """Publish every event durably; with Kafka, up to `PUBLISH_WINDOW` in flight before waiting for
    their acknowledgements (one round trip per event would make a large reprocess slow). `published`
    hears how many of `events` are durable so far."""
    begin = getattr(publisher, "begin_publish", None)
    pending: list[Any] = []
    for done, event in enumerate(events, start=1):
        value = event.reprocessed_under(version).to_json()
        if begin is None:
            publisher.publish(topic, event.key, value)
        else:
            pending.append(begin(topic, event.key, value))
            if len(pending) >= PUBLISH_WINDOW or done == len(events):
                for handle in pending:
                    handle.wait()
                pending.clear()
        if not pending:
            published(done)


def describe(queued: Queued) -> str:
    return (
        f"queued {queued.instances} instance(s) of {queued.studies} study(ies) for model version "
        f"{queued.model_version}; {queued.already_done} already classified under it"
    )
