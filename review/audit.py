"""The audit trail: who did what when. Studies are named by their row id, never by patient data.

Failed sign-ins are audit rows too, and throttling counts them, so every process serving the app
sees the same count.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.db.tables import ReviewAudit

ACTIONS = (
    "sign_in",
    "sign_in_failed",
    "sign_in_throttled",
    "sign_out",
    "study_viewed",
    "verdict_given",
    "user_added",
    "user_removed",
    "password_changed",
)


@dataclass(frozen=True, slots=True)
class Throttle:
    """How many failed sign-ins, per account and per client address, within `window_s`."""

    max_per_account: int = 5
    max_per_address: int = 20
    window_s: int = 900


def record(
    session: Session,
    *,
    action: str,
    now: dt.datetime,
    username: str | None = None,
    address: str | None = None,
    study_id: int | None = None,
    detail: str | None = None,
) -> None:
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    session.add(
        ReviewAudit(
            at=now,
            username=(username or None) and username[:64],
            address=(address or None) and address[:64],
            action=action,
            study_id=study_id,
            detail=detail,
        )
    )
    session.flush()


def _failures(session: Session, since: dt.datetime, column: Any, value: str) -> int:
    query = select(func.count(ReviewAudit.id)).where(
        ReviewAudit.action == "sign_in_failed", ReviewAudit.at > since, column == value
    )
    return int(session.scalar(query) or 0)


def throttled(session: Session, *, throttle: Throttle, username: str, address: str, now: dt.datetime) -> bool:
    """True when the account or the address has failed too often within the window."""
    since = now - dt.timedelta(seconds=throttle.window_s)
    return (
        _failures(session, since, ReviewAudit.username, username[:64]) >= throttle.max_per_account
        or _failures(session, since, ReviewAudit.address, address[:64]) >= throttle.max_per_address
    )


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: dt.datetime
    username: str | None
    address: str | None
    action: str
    study_id: int | None
    detail: str | None


def recent(session: Session, *, limit: int = 200) -> list[AuditEntry]:
    rows = session.scalars(select(ReviewAudit).order_by(ReviewAudit.id.desc()).limit(limit))
    return [AuditEntry(r.at, r.username, r.address, r.action, r.study_id, r.detail) for r in rows]
