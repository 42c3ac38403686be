"""The worklist: complete study results, newest first, filtered, one page at a time.

Keyset pagination on (completed_at, id) over `ix_study_predictions_complete_completed_at`, so a
page costs the same at the start and deep in the list. Shadow results are never shown.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, func, literal_column, or_, select
from sqlalchemy.orm import Session

from common.vocabulary import CLASS_NAMES
from storage.db.results import PROBABILITY_COLUMNS
from storage.db.tables import ModelVersion, ResultReport, ReviewVerdict, Study, StudyPrediction


@dataclass(frozen=True, slots=True)
class Filters:
    unreviewed: bool = False
    indeterminate: bool = False
    disagree: bool = False
    model_version: str | None = None
    date_from: dt.date | None = None
    date_to: dt.date | None = None  # inclusive


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the next page starts: below this (completed_at, id)."""

    completed_at: dt.datetime
    id: int

    def token(self) -> str:
        return f"{self.completed_at.astimezone(dt.UTC).strftime('%Y%m%dT%H%M%S.%f')}_{self.id}"

    @classmethod
    def parse(cls, token: str) -> Cursor | None:
        try:
            stamp, id_ = token.split("_", 1)
            at = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%S.%f").replace(tzinfo=dt.UTC)
            return cls(at, int(id_))
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class WorklistRow:
    study_id: int
    identifier: str
    label: str
    probabilities: dict[str, float]
    model_version: str
    revision: int | None
    completed_at: dt.datetime
    indeterminate: bool | None  # None: the database does not record it
    verdict: str | None
    verdict_label: str | None

    @property
    def disagrees(self) -> bool:
        return self.verdict_label is not None and self.verdict_label != self.label


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[WorklistRow]
    next_cursor: Cursor | None
    model_versions: list[str] = field(default_factory=list)


def _latest_verdict_id() -> Any:
    return (
        select(func.max(ReviewVerdict.id))
        .where(ReviewVerdict.study_id == StudyPrediction.study_id)
        .correlate(StudyPrediction)
        .scalar_subquery()
    )


def _latest_revision() -> Any:
    return (
        select(func.max(ResultReport.revision))
        .where(
            ResultReport.study_id == StudyPrediction.study_id,
            ResultReport.model_version_id == StudyPrediction.model_version_id,
        )
        .correlate(StudyPrediction)
        .scalar_subquery()
    )


def _where(filters: Filters, has_indeterminate: bool, indeterminate: Any) -> list[Any]:
    conditions: list[Any] = [StudyPrediction.complete.is_(True), StudyPrediction.shadow.is_(False)]
    if filters.unreviewed:
        conditions.append(ReviewVerdict.id.is_(None))
    if filters.disagree:
        conditions.append(
            and_(ReviewVerdict.label.is_not(None), ReviewVerdict.label != StudyPrediction.label)
        )
    if filters.indeterminate:
        # Without the column no result is indeterminate: the filter shows nothing rather than everything.
        conditions.append(indeterminate if has_indeterminate else literal_column("1") == 0)
    if filters.model_version:
        conditions.append(ModelVersion.version == filters.model_version)
    if filters.date_from:
        start = dt.datetime.combine(filters.date_from, dt.time(), dt.UTC)
        conditions.append(StudyPrediction.completed_at >= start)
    if filters.date_to:
        end = dt.datetime.combine(filters.date_to + dt.timedelta(days=1), dt.time(), dt.UTC)
        conditions.append(StudyPrediction.completed_at < end)
    return conditions


def worklist_page(
    session: Session,
    *,
    filters: Filters,
    cursor: Cursor | None,
    page_size: int,
    identifier: str = "accession",
    has_indeterminate: bool = False,
) -> Page:
    """One page of the worklist; `has_indeterminate`: `study_predictions.indeterminate_reason` exists."""
    indeterminate: Any = StudyPrediction.indeterminate_reason.is_not(None) if has_indeterminate else None
    ident = Study.study_instance_uid if identifier == "study_uid" else Study.accession_number
    columns: list[Any] = [
        StudyPrediction.id,
        StudyPrediction.study_id,
        ident,
        StudyPrediction.label,
        *(getattr(StudyPrediction, c) for c in PROBABILITY_COLUMNS),
        ModelVersion.version,
        _latest_revision(),
        StudyPrediction.completed_at,
        indeterminate if indeterminate is not None else literal_column("NULL"),
        ReviewVerdict.verdict,
        ReviewVerdict.label,
    ]
    query = (
        select(*columns)
        .join(Study, Study.id == StudyPrediction.study_id)
        .join(ModelVersion, ModelVersion.id == StudyPrediction.model_version_id)
        .outerjoin(ReviewVerdict, ReviewVerdict.id == _latest_verdict_id())
        .where(*_where(filters, has_indeterminate, indeterminate))
    )
    if cursor is not None:
        query = query.where(
            or_(
                StudyPrediction.completed_at < cursor.completed_at,
                and_(StudyPrediction.completed_at == cursor.completed_at, StudyPrediction.id < cursor.id),
            )
        )
    query = query.order_by(StudyPrediction.completed_at.desc(), StudyPrediction.id.desc()).limit(
        page_size + 1
    )
    raw = list(session.execute(query))
    rows = [_row(r) for r in raw[:page_size]]
    next_cursor = None
    if len(raw) > page_size:
        last = raw[page_size - 1]
        next_cursor = Cursor(rows[-1].completed_at, int(last[0]))
    versions = list(session.scalars(select(ModelVersion.version).order_by(ModelVersion.created_at.desc())))
    return Page(rows, next_cursor, versions)


def _row(r: Any) -> WorklistRow:
    n = len(CLASS_NAMES)
    _, study_id, ident, label, *rest = r
    probs, (version, revision, completed_at, indeterminate, verdict, verdict_label) = rest[:n], rest[n:]
    completed = completed_at if completed_at.tzinfo else completed_at.replace(tzinfo=dt.UTC)
    return WorklistRow(
        study_id=int(study_id),
        identifier=str(ident) if ident else f"study {study_id}",
        label=label,
        probabilities={c: float(p) for c, p in zip(CLASS_NAMES, probs, strict=True)},
        model_version=version,
        revision=int(revision) if revision is not None else None,
        completed_at=completed,
        indeterminate=None if indeterminate is None else bool(indeterminate),
        verdict=verdict,
        verdict_label=verdict_label,
    )
