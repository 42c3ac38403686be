"""What a study's report is built from: its key slices, its previous revision, its accession number.

Read by the study-completion sweep before it writes the report (`storage.db.outbox.add_report`).
Keyword-only functions that never commit.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from common.vocabulary import CLASS_NAMES
from storage.db.results import PROBABILITY_COLUMNS
from storage.db.tables import Instance, ModelVersion, Prediction, ResultReport, Series, Study


@dataclass(frozen=True, slots=True)
class KeySlice:
    """A slice that decided the study label: among the study's highest probabilities of that class."""

    sop_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    frame: int  # 0-based
    number_of_frames: int
    archive_uri: str
    probability: float  # of the study label's class

    def as_text(self) -> str:
        return f"{self.sop_instance_uid}:{self.frame}" if self.number_of_frames > 1 else self.sop_instance_uid


def key_slices(
    session: Session, *, study_id: int, model_version_id: int, label: str, limit: int
) -> list[KeySlice]:
    """The `limit` slices (frames) of a study with the highest probability of `label`."""
    column = getattr(Prediction, PROBABILITY_COLUMNS[CLASS_NAMES.index(label)])
    stmt = (
        select(
            Instance.sop_instance_uid,
            Series.series_instance_uid,
            Instance.sop_class_uid,
            Prediction.frame,
            Instance.number_of_frames,
            Instance.archive_uri,
            column,
        )
        .join(Instance, Prediction.instance_id == Instance.id)
        .join(Series, Instance.series_id == Series.id)
        .where(Series.study_id == study_id, Prediction.model_version_id == model_version_id)
        .order_by(column.desc(), Instance.sop_instance_uid, Prediction.frame)
        .limit(limit)
    )
    return [
        KeySlice(
            sop_instance_uid=uid,
            series_instance_uid=series,
            sop_class_uid=sop_class,
            frame=int(frame),
            number_of_frames=int(frames),
            archive_uri=uri,
            probability=float(p),
        )
        for uid, series, sop_class, frame, frames, uri, p in session.execute(stmt)
    ]


def previous_report(session: Session, *, study_id: int) -> tuple[int, str] | None:
    """(revision, model version) of the study's newest report, if any."""
    row = session.execute(
        select(ResultReport.revision, ModelVersion.version)
        .join(ModelVersion, ModelVersion.id == ResultReport.model_version_id)
        .where(ResultReport.study_id == study_id)
        .order_by(ResultReport.revision.desc())
        .limit(1)
    ).first()
    return (int(row[0]), str(row[1])) if row is not None else None


def study_identity(session: Session, *, study_id: int) -> tuple[str | None, str | None]:
    """(accession number, its issuer) of a study."""
    row = session.execute(
        select(Study.accession_number, Study.accession_number_issuer).where(Study.id == study_id)
    ).one()
    return row[0], row[1]
