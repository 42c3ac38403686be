"""A study as the review page shows it: its result, the report's key slices and objects, its verdicts.

Keyword-only functions that take a `Session` and never commit.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import case, select
from sqlalchemy.orm import Session

from classifier.model.preprocess import KIDNEY_WINDOW, Window
from common.vocabulary import CLASS_NAMES
from storage.db.results import PROBABILITY_COLUMNS
from storage.db.tables import (
    Instance,
    ModelVersion,
    ResultObject,
    ResultReport,
    ReviewVerdict,
    Study,
    StudyPrediction,
)


@dataclass(frozen=True, slots=True)
class KeySliceRef:
    sop_instance_uid: str
    frame: int
    archive_uri: str | None  # None: the instance is no longer catalogued


@dataclass(frozen=True, slots=True)
class VerdictRow:
    verdict: str
    label: str | None
    comment: str | None
    username: str
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class StudyView:
    study_id: int
    identifier: str
    model_version_id: int
    model_version: str
    model_status: str
    label: str
    probabilities: dict[str, float]
    n_instances: int
    completed_at: dt.datetime | None
    revision: int | None
    window: Window
    key_slices: list[KeySliceRef]
    objects: dict[str, list[bytes]]  # kind (sr, pmap, sc) -> DICOM bytes of the newest report's objects
    verdicts: list[VerdictRow]

    @property
    def latest_verdict(self) -> VerdictRow | None:
        return self.verdicts[0] if self.verdicts else None


def _window(card: dict[str, object]) -> Window:
    """The window the worker used: the model card's (as `ModelCard.window_obj` reads it, without
    importing Keras); the kidney window for a card without one."""
    window = card.get("window")
    try:
        return Window(center=float(window["center"]), width=float(window["width"]))  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        return KIDNEY_WINDOW


def _result(session: Session, study_id: int) -> tuple[StudyPrediction, ModelVersion] | None:
    """The study's complete clinical result: the active model's first, else the newest."""
    row = session.execute(
        select(StudyPrediction, ModelVersion)
        .join(ModelVersion, ModelVersion.id == StudyPrediction.model_version_id)
        .where(
            StudyPrediction.study_id == study_id,
            StudyPrediction.complete.is_(True),
            StudyPrediction.shadow.is_(False),
        )
        .order_by(case((ModelVersion.status == "active", 0), else_=1), StudyPrediction.completed_at.desc())
        .limit(1)
    ).first()
    return (row[0], row[1]) if row is not None else None


def _key_slices(session: Session, text: str) -> list[KeySliceRef]:
    parsed = []
    for token in text.split():
        uid, _, frame = token.partition(":")
        parsed.append((uid, int(frame) if frame.isdigit() else 0))
    query = select(Instance.sop_instance_uid, Instance.archive_uri).where(
        Instance.sop_instance_uid.in_([u for u, _ in parsed])
    )
    uris = {str(uid): str(uri) for uid, uri in session.execute(query)}
    return [KeySliceRef(uid, frame, uris.get(uid)) for uid, frame in parsed]


def _verdicts(session: Session, study_id: int) -> list[VerdictRow]:
    rows = session.scalars(
        select(ReviewVerdict).where(ReviewVerdict.study_id == study_id).order_by(ReviewVerdict.id.desc())
    )
    return [VerdictRow(v.verdict, v.label, v.comment, v.username, v.created_at) for v in rows]


def study_view(session: Session, *, study_id: int, identifier: str = "accession") -> StudyView | None:
    """The study page's content; None when the study has no complete result."""
    study = session.get(Study, study_id)
    found = _result(session, study_id)
    if study is None or found is None:
        return None
    sp, mv = found
    report = session.scalar(
        select(ResultReport)
        .where(ResultReport.study_id == study_id, ResultReport.model_version_id == mv.id)
        .order_by(ResultReport.revision.desc())
        .limit(1)
    )
    objects: dict[str, list[bytes]] = {}
    if report is not None:
        for kind, data in session.execute(
            select(ResultObject.kind, ResultObject.dataset)
            .where(ResultObject.report_id == report.id)
            .order_by(ResultObject.id)
        ):
            objects.setdefault(kind, []).append(data)
    ident = study.study_instance_uid if identifier == "study_uid" else study.accession_number
    return StudyView(
        study_id=study_id,
        identifier=ident or f"study {study_id}",
        model_version_id=mv.id,
        model_version=mv.version,
        model_status=mv.status,
        label=sp.label,
        probabilities={
            c: float(getattr(sp, col)) for c, col in zip(CLASS_NAMES, PROBABILITY_COLUMNS, strict=True)
        },
        n_instances=sp.n_instances,
        completed_at=sp.completed_at,
        revision=report.revision if report is not None else None,
        window=_window(mv.card),
        key_slices=_key_slices(session, report.key_slices) if report is not None else [],
        objects=objects,
        verdicts=_verdicts(session, study_id),
    )
