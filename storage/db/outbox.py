"""Data access for results sent back to PACS: report revisions, their DICOM objects, the outbox.

The worker writes a report, its objects and one delivery row per object and destination in the
transaction that marks the study complete: a result to send is a row before anything is sent.
Senders claim due deliveries with a lease (`claimed_until`), so several senders share the outbox
and one killed mid-delivery leaves rows that another (or its restart) picks up when the lease ends.
Keyword-only functions that never commit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from storage.db.report_inputs import KeySlice
from storage.db.tables import (
    DELIVERY_STATES,
    ResultDelivery,
    ResultObject,
    ResultReport,
)


@dataclass(frozen=True, slots=True)
class NewObject:
    kind: str
    sop_class_uid: str
    sop_instance_uid: str
    dataset: bytes


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    id: int
    destination: str
    kind: str
    sop_class_uid: str
    sop_instance_uid: str
    dataset: bytes
    attempts: int  # before this one
    lease_ends: dt.datetime  # this claim's lease (renewed when its send starts)
    # The end of a lease that ran out before its sender recorded an outcome (a sender killed or
    # stuck mid-delivery), when this claim took the delivery over from it.
    abandoned_lease: dt.datetime | None = None


def add_report(
    session: Session,
    *,
    study_id: int,
    model_version_id: int,
    revision: int,
    label: str,
    key_slices: Sequence[KeySlice],
    objects: Sequence[NewObject],
    destinations: Sequence[str],
    build_error: str | None,
    now: dt.datetime,
) -> int:
    """Record a report revision, its objects and their deliveries (pending, due now); returns its id."""
    report = ResultReport(
        study_id=study_id,
        model_version_id=model_version_id,
        revision=revision,
        label=label,
        key_slices=" ".join(k.as_text() for k in key_slices),
        build_error=build_error,
        created_at=now,
    )
    session.add(report)
    session.flush()
    for obj in objects:
        row = ResultObject(
            report_id=report.id,
            kind=obj.kind,
            sop_class_uid=obj.sop_class_uid,
            sop_instance_uid=obj.sop_instance_uid,
            dataset=obj.dataset,
            created_at=now,
        )
        session.add(row)
        session.flush()
        for destination in destinations:
            session.add(
                ResultDelivery(
                    object_id=row.id,
                    destination=destination,
                    state="pending",
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )
    session.flush()
    return report.id


def due_delivery_ids(session: Session, *, now: dt.datetime, limit: int) -> list[int]:
    stmt = (
        select(ResultDelivery.id)
        .where(
            ResultDelivery.state == "pending",
            ResultDelivery.next_attempt_at <= now,
            or_(ResultDelivery.claimed_until.is_(None), ResultDelivery.claimed_until < now),
        )
        .order_by(ResultDelivery.next_attempt_at, ResultDelivery.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def claim(session: Session, *, delivery_id: int, now: dt.datetime, lease_s: float) -> ClaimedDelivery | None:
    """Take a due delivery for `lease_s` unless another sender holds it; None when it is gone."""
    previous_lease = session.scalar(
        select(ResultDelivery.claimed_until).where(ResultDelivery.id == delivery_id)
    )
    lease_ends = now + dt.timedelta(seconds=lease_s)
    # An UPDATE's result is a CursorResult (it has a row count); Session.execute is typed for any statement.
    taken = cast(
        CursorResult[Any],
        session.execute(
            update(ResultDelivery)
            .where(
                ResultDelivery.id == delivery_id,
                ResultDelivery.state == "pending",
                or_(ResultDelivery.claimed_until.is_(None), ResultDelivery.claimed_until < now),
            )
            .values(claimed_until=lease_ends)
        ),
    )
    if not taken.rowcount:
        return None
    row = session.execute(
        select(
            ResultDelivery.id,
            ResultDelivery.destination,
            ResultObject.kind,
            ResultObject.sop_class_uid,
            ResultObject.sop_instance_uid,
            ResultObject.dataset,
            ResultDelivery.attempts,
        )
        .join(ResultObject, ResultObject.id == ResultDelivery.object_id)
        .where(ResultDelivery.id == delivery_id)
    ).one()
    return ClaimedDelivery(*row, lease_ends=lease_ends, abandoned_lease=_aware(previous_lease))


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite gives back naive datetimes; every timestamp stored here is UTC."""
    return value.replace(tzinfo=dt.UTC) if value is not None and value.tzinfo is None else value


def renew_lease(
    session: Session, *, delivery_id: int, held_until: dt.datetime, now: dt.datetime, lease_s: float
) -> dt.datetime | None:
    """Before a send starts: extend the lease this sender holds (until `held_until`) to `lease_s`
    from now. None when that lease already ran out: the delivery is then given back (due at once)
    unless another sender took it over, whose lease ends later than `held_until`."""
    ours = and_(
        ResultDelivery.id == delivery_id,
        ResultDelivery.state == "pending",
        ResultDelivery.claimed_until <= held_until,
    )
    until = now + dt.timedelta(seconds=lease_s)
    renewed = cast(
        CursorResult[Any],
        session.execute(
            update(ResultDelivery).where(ours, ResultDelivery.claimed_until > now).values(claimed_until=until)
        ),
    )
    if renewed.rowcount:
        return until
    session.execute(update(ResultDelivery).where(ours).values(claimed_until=None, updated_at=now))
    return None


def leased_deliveries(session: Session, *, now: dt.datetime) -> tuple[int, dt.datetime | None]:
    """Pending deliveries under a lease that has not ended, and when the last of those leases ends."""
    count, last = session.execute(
        select(func.count(), func.max(ResultDelivery.claimed_until)).where(
            ResultDelivery.state == "pending", ResultDelivery.claimed_until >= now
        )
    ).one()
    return int(count), _aware(last)


def mark_delivered(session: Session, *, delivery_id: int, now: dt.datetime) -> None:
    session.execute(
        update(ResultDelivery)
        .where(ResultDelivery.id == delivery_id)
        .values(
            state="delivered",
            attempts=ResultDelivery.attempts + 1,
            delivered_at=now,
            updated_at=now,
            claimed_until=None,
            last_error=None,
        )
    )


def mark_attempt_failed(
    session: Session,
    *,
    delivery_id: int,
    error: str,
    next_attempt_at: dt.datetime,
    give_up: bool,
    now: dt.datetime,
) -> None:
    """Count a failed attempt: due again at `next_attempt_at`, or `failed` for good when `give_up`."""
    session.execute(
        update(ResultDelivery)
        .where(ResultDelivery.id == delivery_id)
        .values(
            state="failed" if give_up else "pending",
            attempts=ResultDelivery.attempts + 1,
            next_attempt_at=next_attempt_at,
            updated_at=now,
            claimed_until=None,
            last_error=error[:2000],
        )
    )


def delivery_counts(session: Session) -> dict[str, int]:
    """Deliveries per state (every state present, 0 when none)."""
    counts = dict.fromkeys(DELIVERY_STATES, 0)
    for state, n in session.execute(
        select(ResultDelivery.state, func.count()).group_by(ResultDelivery.state)
    ):
        counts[state] = int(n)
    return counts
