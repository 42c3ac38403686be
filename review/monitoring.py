"""How each model version does against the radiologists' verdicts, and how the pipeline is doing.

Per model version: the confusion matrix of its study labels against the newest verdict of each
reviewed study, agreement, macro-F1 with a study-bootstrap interval, agreement per ISO week, the
share of indeterminate results (n/a where the database does not record it), the share of slices the
shift detector flagged as unlike the training data (of those it scored), and the time from the
first instance received to the complete result. Overall: deliveries by state, unreviewed studies,
and labels from radiologists since the active model was trained. The page and the Prometheus
metrics read the same figures.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import case, func, literal_column, select
from sqlalchemy.orm import Session

from common.vocabulary import CLASS_NAMES
from storage.db.outbox import delivery_counts
from storage.db.tables import Label, ModelVersion, Prediction, ReviewVerdict, Study, StudyPrediction
from training.bootstrap import group_draw_weights, interval, replicate_scores

RECENT_DAYS = 7


@dataclass
class VersionFigures:
    version: str
    status: str
    n_results: int = 0
    n_reviewed: int = 0
    confusion: list[list[int]] = field(default_factory=list)  # rows: reader's class, columns: AI's
    agreement: float | None = None
    macro_f1: float | None = None
    macro_f1_interval: list[float] | None = None
    weekly: list[tuple[str, int, float]] = field(default_factory=list)  # (ISO week, verdicts, agreement)
    recent_reviewed: int = 0
    recent_disagreement: float | None = None
    indeterminate_share: float | None = None
    shifted_share: float | None = None  # of the slices with a shift score (versions without a detector: None)
    turnaround_median_s: float | None = None
    turnaround_p90_s: float | None = None


@dataclass
class Monitoring:
    versions: list[VersionFigures]
    deliveries: dict[str, int]
    unreviewed: int
    active_version: str | None
    verdicts_since_active: int | None
    indeterminate_recorded: bool


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _latest_verdicts(session: Session) -> dict[int, list[tuple[int, str, str, dt.datetime]]]:
    """Per model version id: (study id, reader's class, AI's class, when) of each study's newest verdict
    with a class for that version (not-assessable verdicts have none and are left out)."""
    latest: dict[tuple[int, int], tuple[int, str, str, dt.datetime]] = {}
    query = select(
        ReviewVerdict.study_id,
        ReviewVerdict.model_version_id,
        ReviewVerdict.verdict,
        ReviewVerdict.label,
        ReviewVerdict.ai_label,
        ReviewVerdict.created_at,
    ).order_by(ReviewVerdict.id)
    for study_id, version_id, verdict, label, ai_label, at in session.execute(query):
        key = (study_id, version_id)
        if verdict == "not_assessable" or label is None:
            latest.pop(key, None)  # the newest verdict says there is nothing to compare
        else:
            latest[key] = (study_id, label, ai_label, _aware(at))
    out: dict[int, list[tuple[int, str, str, dt.datetime]]] = defaultdict(list)
    for (_, version_id), row in latest.items():
        out[version_id].append(row)
    return out


def _agreement_figures(
    figures: VersionFigures, rows: list[tuple[int, str, str, dt.datetime]], now: dt.datetime, n_boot: int
) -> None:
    k = len(CLASS_NAMES)
    y_true = np.asarray([CLASS_NAMES.index(r[1]) for r in rows], dtype=np.int64)
    y_pred = np.asarray([CLASS_NAMES.index(r[2]) for r in rows], dtype=np.int64)
    confusion = np.zeros((k, k), dtype=int)
    np.add.at(confusion, (y_true, y_pred), 1)
    figures.confusion = confusion.tolist()
    figures.n_reviewed = len(rows)
    if not rows:
        return
    figures.agreement = float((y_true == y_pred).mean())
    figures.macro_f1 = float(replicate_scores(y_true, y_pred, np.ones((1, len(rows))), k)["macro_f1"][0])
    if n_boot > 0:
        weights = group_draw_weights([r[0] for r in rows], n_boot, seed=0)
        figures.macro_f1_interval = interval(replicate_scores(y_true, y_pred, weights, k)["macro_f1"])
    weeks: dict[str, list[bool]] = defaultdict(list)
    recent: list[bool] = []
    for _, reader, ai, at in rows:
        year, week, _ = at.isocalendar()
        weeks[f"{year}-W{week:02d}"].append(reader == ai)
        if at >= now - dt.timedelta(days=RECENT_DAYS):
            recent.append(reader == ai)
    figures.weekly = [(w, len(v), sum(v) / len(v)) for w, v in sorted(weeks.items())]
    figures.recent_reviewed = len(recent)
    figures.recent_disagreement = 1.0 - sum(recent) / len(recent) if recent else None


def _result_figures(session: Session, indeterminate_recorded: bool) -> dict[int, dict[str, Any]]:
    """Per model version id: complete results, indeterminate ones, turnaround quantiles."""
    indeterminate: Any = StudyPrediction.indeterminate_reason.is_not(None) if indeterminate_recorded else None
    query = (
        select(
            StudyPrediction.model_version_id,
            Study.first_received_at,
            StudyPrediction.completed_at,
            indeterminate if indeterminate is not None else literal_column("NULL"),
        )
        .join(Study, Study.id == StudyPrediction.study_id)
        .where(StudyPrediction.complete.is_(True), StudyPrediction.shadow.is_(False))
    )
    waits: dict[int, list[float]] = defaultdict(list)
    flagged: dict[int, int] = defaultdict(int)
    for version_id, received, completed, is_indeterminate in session.execute(query):
        if completed is not None:
            waits[version_id].append((_aware(completed) - _aware(received)).total_seconds())
        flagged[version_id] += int(bool(is_indeterminate))
    out = {}
    for version_id, values in waits.items():
        array = np.asarray(values)
        out[version_id] = {
            "n": len(values),
            "indeterminate": flagged[version_id] / len(values) if indeterminate_recorded else None,
            "median": float(np.median(array)),
            "p90": float(np.percentile(array, 90)),
        }
    return out


def _shifted_shares(session: Session) -> dict[int, float]:
    """Per model version id: flagged slices over slices the shift detector scored."""
    flagged = func.sum(case((Prediction.shifted.is_(True), 1), else_=0))
    query = (
        select(Prediction.model_version_id, flagged, func.count(Prediction.id))
        .where(Prediction.shifted.is_not(None))
        .group_by(Prediction.model_version_id)
    )
    return {version_id: int(n_flagged or 0) / n for version_id, n_flagged, n in session.execute(query) if n}


def unreviewed_count(session: Session) -> int:
    reviewed = select(ReviewVerdict.id).where(ReviewVerdict.study_id == StudyPrediction.study_id).exists()
    return int(
        session.scalar(
            select(func.count(StudyPrediction.id)).where(
                StudyPrediction.complete.is_(True), StudyPrediction.shadow.is_(False), ~reviewed
            )
        )
        or 0
    )


def _since_active(session: Session) -> tuple[str | None, int | None]:
    active = session.execute(
        select(ModelVersion.version, ModelVersion.created_at).where(ModelVersion.status == "active")
    ).first()
    if active is None:
        return None, None
    count = session.scalar(
        select(func.count(Label.id)).where(Label.source == "radiologist", Label.created_at > active[1])
    )
    return str(active[0]), int(count or 0)


def monitoring(
    session: Session, *, now: dt.datetime, indeterminate_recorded: bool, n_boot: int = 500
) -> Monitoring:
    verdicts = _latest_verdicts(session)
    results = _result_figures(session, indeterminate_recorded)
    shifted = _shifted_shares(session)
    versions = []
    for mv in session.scalars(select(ModelVersion).order_by(ModelVersion.created_at.desc())):
        if mv.id not in results and mv.id not in verdicts:
            continue
        figures = VersionFigures(mv.version, mv.status, shifted_share=shifted.get(mv.id))
        done = results.get(mv.id)
        if done is not None:
            figures.n_results = done["n"]
            figures.indeterminate_share = done["indeterminate"]
            figures.turnaround_median_s, figures.turnaround_p90_s = done["median"], done["p90"]
        _agreement_figures(figures, verdicts.get(mv.id, []), now, n_boot)
        versions.append(figures)
    active, since = _since_active(session)
    return Monitoring(
        versions=versions,
        deliveries=delivery_counts(session),
        unreviewed=unreviewed_count(session),
        active_version=active,
        verdicts_since_active=since,
        indeterminate_recorded=indeterminate_recorded,
    )
