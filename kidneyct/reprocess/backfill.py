"""`kidneyct models promote VERSION --backfill-since DURATION`: after the promotion, queue the studies
received in that window for the new version (the same queueing as `kidneyct reprocess`)."""

from __future__ import annotations

import datetime as dt

import click
from sqlalchemy.orm import Session, sessionmaker

from kidneyct.reprocess.queue import ReprocessError, describe, parse_duration, queue_reprocess
from kidneyct.settings import Settings
from storage.db.reprocess import Selection


def backfill_window(text: str | None) -> dt.timedelta | None:
    """The window of `--backfill-since`, checked before anything is promoted."""
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ReprocessError as exc:
        raise click.BadParameter(str(exc), param_hint="--backfill-since") from None


def backfill(
    settings: Settings, sessions: sessionmaker[Session], *, version: str, window: dt.timedelta
) -> str:
    """Queue the studies received in the last `window` for `version`; returns what was queued."""
    since = dt.datetime.now(dt.UTC) - window
    queued = queue_reprocess(
        settings, sessions, selection=Selection(received_since=since), model_version=version
    )
    return "backfill: " + describe(queued)
