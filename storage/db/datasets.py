"""Imported training images (`dataset_images`): registered in place, never copied.

Keyword-only functions that take a `Session` and never commit: the caller owns the transaction.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from common.vocabulary import CLASS_NAMES
from storage.db.tables import DatasetImage


@dataclass(frozen=True, slots=True)
class RegisterOutcome:
    created: bool
    updated: bool


def register_dataset_image(
    session: Session, *, path: str, sha256: str, label: str, source: str, now: dt.datetime
) -> RegisterOutcome:
    """Register one image by absolute path; re-registering the same file is a no-op, a changed one is updated."""
    if label not in CLASS_NAMES:
        raise ValueError(f"unknown class {label!r}; expected one of {', '.join(CLASS_NAMES)}")
    existing = session.scalar(select(DatasetImage).where(DatasetImage.path == path))
    if existing is None:
        session.add(DatasetImage(path=path, sha256=sha256, label=label, source=source, created_at=now))
        session.flush()
        return RegisterOutcome(created=True, updated=False)
    if (existing.sha256, existing.label, existing.source) == (sha256, label, source):
        return RegisterOutcome(created=False, updated=False)
    # The file changed (or was re-labelled): it counts as new data for `--min-new-labels`.
    existing.sha256, existing.label, existing.source, existing.created_at = sha256, label, source, now
    session.flush()
    return RegisterOutcome(created=False, updated=True)


def list_dataset_images(session: Session, *, source: str | None = None) -> list[DatasetImage]:
    """Registered images ordered by path, optionally only those of one source."""
    query = select(DatasetImage).order_by(DatasetImage.path)
    if source is not None:
        query = query.where(DatasetImage.source == source)
    return list(session.scalars(query))


def count_dataset_images_since(session: Session, *, since: dt.datetime | None) -> int:
    """Images registered (or changed) after `since` (all of them when `since` is None)."""
    query = select(func.count(DatasetImage.id))
    if since is not None:
        query = query.where(DatasetImage.created_at > since)
    return int(session.scalar(query) or 0)
