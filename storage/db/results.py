"""Data access for what the classifier writes: studies, series, instances, predictions, study results.

Every write is an upsert or an insert that ignores conflicts, on PostgreSQL and SQLite alike, so a
re-delivered event never makes a second row. Keyword-only functions that never commit: the
classifier worker writes one batch in one transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import and_, case, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from common.vocabulary import CLASS_NAMES
from storage.db.tables import Instance, ModelVersion, Prediction, Series, Study, StudyPrediction
from storage.stream.events import InstanceEvent

PROBABILITY_COLUMNS = tuple(f"p_{c.lower()}" for c in CLASS_NAMES)
COUNT_COLUMNS = tuple(f"n_{c.lower()}" for c in CLASS_NAMES)
TERMINAL_STATES = ("processed", "failed", "skipped")

# What the listener recorded of an archived file: the same names on the event, the row and the table.
ARCHIVED_FILE_FIELDS = (
    "sop_class_uid",
    "transfer_syntax_uid",
    "archive_uri",
    "sha256",
    "size_bytes",
    "calling_ae",
)


@dataclass(frozen=True, slots=True)
class StudyRow:
    study_instance_uid: str
    accession_number: str | None
    received_at: dt.datetime
    accession_number_issuer: str | None = None


@dataclass(frozen=True, slots=True)
class SeriesRow:
    series_instance_uid: str
    study_instance_uid: str
    modality: str | None


@dataclass(frozen=True, slots=True)
class InstanceRow:
    sop_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    archive_uri: str
    sha256: str
    size_bytes: int
    calling_ae: str | None
    instance_number: int | None
    number_of_frames: int
    received_at: dt.datetime
    state: str
    state_reason: str | None = None

    @classmethod
    def of_event(
        cls,
        event: InstanceEvent,
        *,
        received_at: dt.datetime,
        state: str,
        frames: int,
        reason: str | None = None,
    ) -> InstanceRow:
        """The row an instance event describes (an InstanceNumber that is not an integer is stored as none)."""
        return cls(
            sop_instance_uid=event.sop_instance_uid,
            series_instance_uid=event.series_instance_uid,
            sop_class_uid=event.sop_class_uid,
            transfer_syntax_uid=event.transfer_syntax_uid,
            archive_uri=event.archive_uri,
            sha256=event.sha256,
            size_bytes=event.size_bytes,
            calling_ae=event.calling_ae,
            instance_number=event.instance_number if isinstance(event.instance_number, int) else None,
            number_of_frames=frames,
            received_at=received_at,
            state=state,
            state_reason=reason,
        )


@dataclass(frozen=True, slots=True)
class PredictionRow:
    sop_instance_uid: str
    frame: int
    label: str
    probabilities: tuple[float, ...]  # in CLASS_NAMES order
    shift_score: float | None = None  # the shift detector's score; None without a detector
    shifted: bool | None = None


@dataclass(frozen=True, slots=True)
class StudyAggregate:
    """Per class: the highest probability, the slices predicted as it, the slices with p >= t, and its
    probability on every slice (frame) of the study, highest first (what the study's evidence is computed
    from, `classifier.study.evidence`); and the slices predicted and flagged by the shift detector."""

    study_id: int
    study_instance_uid: str
    n_instances: int
    max_probability: dict[str, float]
    n_predicted: dict[str, int]
    n_confident: dict[str, int]
    slice_probabilities: dict[str, tuple[float, ...]] = field(default_factory=dict)
    n_slices: int = 0
    n_shifted: int = 0


@dataclass(frozen=True, slots=True)
class IncompleteStudy:
    study_prediction_id: int
    study_id: int
    study_instance_uid: str
    model_version_id: int
    last_received_at: dt.datetime
    updated_at: dt.datetime
    pending_instances: int
    shadow: bool = False  # a shadow's or non-active reprocess's result: completed without announcing it


def _insert(session: Session, table: Any) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"no upsert for dialect {name}")


def _greatest(session: Session, a: Any, b: Any) -> Any:
    # SQLite's two-argument max() is the scalar GREATEST of PostgreSQL.
    return func.greatest(a, b) if session.get_bind().dialect.name == "postgresql" else func.max(a, b)


def _least(session: Session, a: Any, b: Any) -> Any:
    return func.least(a, b) if session.get_bind().dialect.name == "postgresql" else func.min(a, b)


def _last_by(rows: Iterable[Any], key: str) -> list[Any]:
    """One row per key (the last wins): one statement may not update the same row twice."""
    return list({getattr(r, key): r for r in rows}.values())


def upsert_studies(session: Session, *, studies: Sequence[StudyRow]) -> dict[str, int]:
    """Insert or update studies; returns their ids by Study Instance UID."""
    merged: dict[str, dict[str, Any]] = {}
    for s in studies:
        row = merged.setdefault(
            s.study_instance_uid,
            {
                "study_instance_uid": s.study_instance_uid,
                "accession_number": s.accession_number,
                "accession_number_issuer": s.accession_number_issuer,
                "first_received_at": s.received_at,
                "last_received_at": s.received_at,
            },
        )
        row["first_received_at"] = min(row["first_received_at"], s.received_at)
        row["last_received_at"] = max(row["last_received_at"], s.received_at)
        row["accession_number"] = row["accession_number"] or s.accession_number
        row["accession_number_issuer"] = row["accession_number_issuer"] or s.accession_number_issuer
    return _upsert_ids(
        session,
        Study,
        list(merged.values()),
        key="study_instance_uid",
        updates=lambda excluded: {
            "accession_number": func.coalesce(excluded.accession_number, Study.accession_number),
            "accession_number_issuer": func.coalesce(
                excluded.accession_number_issuer, Study.accession_number_issuer
            ),
            "first_received_at": _least(session, Study.first_received_at, excluded.first_received_at),
            "last_received_at": _greatest(session, Study.last_received_at, excluded.last_received_at),
        },
    )


def upsert_series(
    session: Session, *, series: Sequence[SeriesRow], study_ids: dict[str, int]
) -> dict[str, int]:
    """Insert or update series; returns their ids by Series Instance UID."""
    values = [
        {
            "series_instance_uid": s.series_instance_uid,
            "study_id": study_ids[s.study_instance_uid],
            "modality": s.modality,
        }
        for s in _last_by(series, "series_instance_uid")
    ]
    return _upsert_ids(
        session,
        Series,
        values,
        key="series_instance_uid",
        updates=lambda excluded: {"modality": func.coalesce(excluded.modality, Series.modality)},
    )


def upsert_instances(
    session: Session, *, instances: Sequence[InstanceRow], series_ids: dict[str, int], now: dt.datetime
) -> dict[str, int]:
    """Insert or update instances with their processing state; returns ids by SOP Instance UID.

    A failure never overwrites `processed`: a re-sent instance whose second delivery fails keeps
    the result of the first. `received` (the catalogue's row, written before any worker saw the
    instance) never overwrites anything: whichever of the two comes second, the worker's state stays.
    """
    values = [
        {
            "sop_instance_uid": i.sop_instance_uid,
            "series_id": series_ids[i.series_instance_uid],
            "sop_class_uid": i.sop_class_uid,
            "transfer_syntax_uid": i.transfer_syntax_uid,
            "archive_uri": i.archive_uri,
            "sha256": i.sha256,
            "size_bytes": i.size_bytes,
            "calling_ae": i.calling_ae,
            "instance_number": i.instance_number,
            "number_of_frames": i.number_of_frames,
            "received_at": i.received_at,
            "state": i.state,
            "state_reason": i.state_reason,
            "updated_at": now,
        }
        for i in _last_by(instances, "sop_instance_uid")
    ]
    fields = (
        "series_id",
        *ARCHIVED_FILE_FIELDS,
        "instance_number",
        "number_of_frames",
        "received_at",
        "state",
        "state_reason",
        "updated_at",
    )

    def updates(excluded: Any) -> dict[str, Any]:
        keep_existing = or_(
            and_(Instance.state == "processed", excluded.state != "processed"), excluded.state == "received"
        )
        return {f: case((keep_existing, getattr(Instance, f)), else_=getattr(excluded, f)) for f in fields}

    return _upsert_ids(session, Instance, values, key="sop_instance_uid", updates=updates)


def _upsert_ids(
    session: Session,
    table: Any,
    values: list[dict[str, Any]],
    *,
    key: str,
    updates: Callable[[Any], dict[str, Any]],
) -> dict[str, int]:
    """Insert `values` (one per `key`), or set the columns `updates(excluded)` gives where `key`
    exists already; returns the rows' ids by `key`."""
    if not values:
        return {}
    stmt = _insert(session, table).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[getattr(table, key)], set_=updates(stmt.excluded)
    ).returning(getattr(table, key), table.id)
    return {k: id_ for k, id_ in session.execute(stmt)}


def forget_changed_instances(session: Session, *, instances: Sequence[tuple[str, str]]) -> set[str]:
    """Delete the predictions of instances whose stored sha256 differs from the given one: their
    content was re-sent with changes, so the old predictions no longer belong to the archived pixels.
    `instances` are (SOP Instance UID, sha256) pairs; returns the UIDs whose predictions went."""
    if not instances:
        return set()
    wanted = dict(instances)
    rows = session.execute(
        select(Instance.id, Instance.sop_instance_uid, Instance.sha256).where(
            Instance.sop_instance_uid.in_(list(wanted))
        )
    )
    changed = {id_: uid for id_, uid, sha in rows if sha != wanted[uid]}
    if changed:
        session.execute(delete(Prediction).where(Prediction.instance_id.in_(list(changed))))
    return set(changed.values())


def insert_predictions(
    session: Session,
    *,
    predictions: Sequence[PredictionRow],
    instance_ids: dict[str, int],
    model_version_id: int,
    now: dt.datetime,
) -> set[int]:
    """Insert predictions, ignoring those already there; returns the instance ids that got new rows."""
    if not predictions:
        return set()
    values = []
    for p in _last_by_key(predictions):
        if len(p.probabilities) != len(CLASS_NAMES) or p.label not in CLASS_NAMES:
            raise ValueError(f"prediction of {p.sop_instance_uid} frame {p.frame} does not fit {CLASS_NAMES}")
        row: dict[str, Any] = {
            "instance_id": instance_ids[p.sop_instance_uid],
            "frame": p.frame,
            "model_version_id": model_version_id,
            "label": p.label,
            "created_at": now,
            "shift_score": p.shift_score,
            "shifted": p.shifted,
        }
        row.update(zip(PROBABILITY_COLUMNS, (float(v) for v in p.probabilities), strict=True))
        values.append(row)
    stmt = (
        _insert(session, Prediction)
        .values(values)
        .on_conflict_do_nothing(index_elements=["instance_id", "frame", "model_version_id"])
        .returning(Prediction.instance_id)
    )
    return set(session.scalars(stmt))


def _last_by_key(predictions: Sequence[PredictionRow]) -> list[PredictionRow]:
    return list({(p.sop_instance_uid, p.frame): p for p in predictions}.values())


def study_ids_of_instances(session: Session, *, instance_ids: Iterable[int]) -> set[int]:
    ids = list(instance_ids)
    if not ids:
        return set()
    stmt = select(Series.study_id).join(Instance, Instance.series_id == Series.id).where(Instance.id.in_(ids))
    return set(session.scalars(stmt))


def study_aggregates(
    session: Session, *, study_ids: Iterable[int], model_version_id: int, min_probability: float
) -> list[StudyAggregate]:
    """Aggregate the predictions of `model_version_id` over each study (one row per study with any)."""
    ids = sorted(set(study_ids))
    if not ids:
        return []
    columns: list[Any] = [
        Series.study_id,
        Study.study_instance_uid,
        func.count(func.distinct(Prediction.instance_id)),
    ]
    for name, p_col in zip(CLASS_NAMES, PROBABILITY_COLUMNS, strict=True):
        column = getattr(Prediction, p_col)
        columns.append(func.max(column))
        columns.append(func.sum(case((Prediction.label == name, 1), else_=0)))
        columns.append(func.sum(case((column >= min_probability, 1), else_=0)))
    columns.append(func.count(Prediction.id))
    columns.append(func.sum(case((Prediction.shifted.is_(True), 1), else_=0)))
    stmt = (
        select(*columns)
        .join(Instance, Prediction.instance_id == Instance.id)
        .join(Series, Instance.series_id == Series.id)
        .join(Study, Series.study_id == Study.id)
        .where(Series.study_id.in_(ids), Prediction.model_version_id == model_version_id)
        .group_by(Series.study_id, Study.study_instance_uid)
    )
    slices = _slice_probabilities(session, study_ids=ids, model_version_id=model_version_id)
    out = []
    for row in session.execute(stmt):
        study_id, uid, n_instances, *per_class, n_slices, n_shifted = row
        out.append(
            StudyAggregate(
                study_id=study_id,
                study_instance_uid=uid,
                n_instances=int(n_instances),
                max_probability={c: float(per_class[3 * i]) for i, c in enumerate(CLASS_NAMES)},
                n_predicted={c: int(per_class[3 * i + 1]) for i, c in enumerate(CLASS_NAMES)},
                n_confident={c: int(per_class[3 * i + 2]) for i, c in enumerate(CLASS_NAMES)},
                slice_probabilities=slices.get(study_id, {}),
                n_slices=int(n_slices),
                n_shifted=int(n_shifted or 0),
            )
        )
    return out


def _slice_probabilities(
    session: Session, *, study_ids: list[int], model_version_id: int
) -> dict[int, dict[str, tuple[float, ...]]]:
    """Per study, each class's probability on every predicted slice, highest first."""
    stmt = (
        select(Series.study_id, *(getattr(Prediction, c) for c in PROBABILITY_COLUMNS))
        .join(Instance, Prediction.instance_id == Instance.id)
        .join(Series, Instance.series_id == Series.id)
        .where(Series.study_id.in_(study_ids), Prediction.model_version_id == model_version_id)
    )
    per_study: dict[int, list[tuple[float, ...]]] = {}
    for study_id, *probabilities in session.execute(stmt):
        per_study.setdefault(study_id, []).append(tuple(float(v) for v in probabilities))
    return {
        study_id: {c: tuple(sorted((r[i] for r in rows), reverse=True)) for i, c in enumerate(CLASS_NAMES)}
        for study_id, rows in per_study.items()
    }


def upsert_study_prediction(
    session: Session,
    *,
    aggregate: StudyAggregate,
    model_version_id: int,
    label: str,
    now: dt.datetime,
    shadow: bool = False,
    indeterminate_reason: str | None = None,
    evidence: float | None = None,
) -> None:
    """Write a recomputed study result; it is (re-)opened: completeness is decided later.
    `shadow`: written by a shadow model or a non-active reprocess (kept out of the clinical path).
    `indeterminate_reason`: why `label` (the rule's) is withheld; None when the study is answered."""
    values: dict[str, Any] = {
        "shadow": shadow,
        "indeterminate_reason": indeterminate_reason,
        "evidence": evidence,
        "n_shifted": aggregate.n_shifted,
        "study_id": aggregate.study_id,
        "model_version_id": model_version_id,
        "label": label,
        "n_instances": aggregate.n_instances,
        "complete": False,
        "completed_at": None,
        "updated_at": now,
    }
    for name, p_col, n_col in zip(CLASS_NAMES, PROBABILITY_COLUMNS, COUNT_COLUMNS, strict=True):
        values[p_col] = aggregate.max_probability[name]
        values[n_col] = aggregate.n_predicted[name]
    stmt = _insert(session, StudyPrediction).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["study_id", "model_version_id"],
        set_={k: getattr(stmt.excluded, k) for k in values if k not in ("study_id", "model_version_id")},
    )
    session.execute(stmt)


def incomplete_studies(session: Session, *, cutoff: dt.datetime) -> list[IncompleteStudy]:
    """Open study results whose study got no instance and no recompute since `cutoff`."""
    pending = (
        select(func.count(Instance.id))
        .join(Series, Instance.series_id == Series.id)
        .where(Series.study_id == Study.id, Instance.state.not_in(TERMINAL_STATES))
        .scalar_subquery()
    )
    stmt = (
        select(
            StudyPrediction.id,
            Study.id,
            Study.study_instance_uid,
            StudyPrediction.model_version_id,
            Study.last_received_at,
            StudyPrediction.updated_at,
            pending,
            StudyPrediction.shadow,
        )
        .join(Study, StudyPrediction.study_id == Study.id)
        .where(
            StudyPrediction.complete.is_(False),
            Study.last_received_at <= cutoff,
            StudyPrediction.updated_at <= cutoff,
        )
        .order_by(StudyPrediction.id)
    )
    return [IncompleteStudy(*row) for row in session.execute(stmt)]


@dataclass(frozen=True, slots=True)
class StudyResult:
    """A study's current result by class name (the columns stay storage's business)."""

    model_version: str
    label: str
    max_probability: dict[str, float]
    n_predicted: dict[str, int]
    n_instances: int
    indeterminate_reason: str | None = None
    evidence: float | None = None
    n_shifted: int | None = None
    card: dict[str, Any] = field(default_factory=dict)  # the model version's card (its decision policy)


def study_result(session: Session, *, study_prediction_id: int) -> StudyResult | None:
    """The study result `study_prediction_id` with its model version's name; None if it is gone."""
    found = session.execute(
        select(StudyPrediction, ModelVersion.version, ModelVersion.card)
        .join(ModelVersion, ModelVersion.id == StudyPrediction.model_version_id)
        .where(StudyPrediction.id == study_prediction_id)
    ).one_or_none()
    if found is None:
        return None
    row, version, card = found
    return StudyResult(
        model_version=version,
        label=row.label,
        max_probability={
            c: float(getattr(row, col)) for c, col in zip(CLASS_NAMES, PROBABILITY_COLUMNS, strict=True)
        },
        n_predicted={c: int(getattr(row, col)) for c, col in zip(CLASS_NAMES, COUNT_COLUMNS, strict=True)},
        n_instances=row.n_instances,
        indeterminate_reason=row.indeterminate_reason,
        evidence=row.evidence,
        n_shifted=row.n_shifted,
        card=dict(card or {}),
    )


def mark_study_complete(
    session: Session, *, study_prediction_id: int, expected_updated_at: dt.datetime, now: dt.datetime
) -> bool:
    """Mark one study result complete if it is still open and unchanged since `expected_updated_at`
    (a recompute in between re-opened it); returns whether it was marked."""
    # An UPDATE's result is a CursorResult (it has a row count); Session.execute is typed for any statement.
    result = cast(
        CursorResult[Any],
        session.execute(
            update(StudyPrediction)
            .where(
                StudyPrediction.id == study_prediction_id,
                StudyPrediction.complete.is_(False),
                StudyPrediction.updated_at == expected_updated_at,
            )
            .values(complete=True, completed_at=now)
        ),
    )
    return bool(result.rowcount)
