"""What a promotion changes for PACS: the promoted version's study results that differ from what was sent.

A shadow (or a reprocess under a version not yet active) completes its study results quietly: never
announced, never reported. When that version becomes active, the backfill queues nothing for those
studies (their rows exist), so without this step PACS would keep the old version's reports while the
database calls the new version's labels the result. Here every such result whose label differs from
the study's newest report (or that was never reported) is re-opened as a live result: the worker's
completion sweep then completes it again and writes the next report revision, whose SR replaces the
previous one, through the outbox like any other. Keyword-only, never commits.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session

from storage.db.tables import ResultReport, StudyPrediction

CHUNK = 500  # ids per UPDATE: well under every backend's bound-parameter limit


def reopen_changed_results(session: Session, *, model_version_id: int, now: dt.datetime) -> int:
    """Re-open the version's complete study results that differ from the delivered report; clear the
    shadow mark of its open ones (they are live results now). Returns how many were re-opened."""
    newest = (
        select(ResultReport.study_id, func.max(ResultReport.revision).label("revision"))
        .group_by(ResultReport.study_id)
        .subquery()
    )
    delivered = (
        select(ResultReport.study_id, ResultReport.label)
        .join(
            newest,
            and_(newest.c.study_id == ResultReport.study_id, newest.c.revision == ResultReport.revision),
        )
        .subquery()
    )
    rows = session.execute(
        select(StudyPrediction.id, StudyPrediction.label, delivered.c.label)
        .outerjoin(delivered, delivered.c.study_id == StudyPrediction.study_id)
        .where(StudyPrediction.model_version_id == model_version_id, StudyPrediction.complete.is_(True))
    )
    changed = [sp_id for sp_id, label, sent in rows if sent != label]
    for start in range(0, len(changed), CHUNK):
        session.execute(
            update(StudyPrediction)
            .where(StudyPrediction.id.in_(changed[start : start + CHUNK]))
            .values(complete=False, completed_at=None, shadow=False, updated_at=now)
        )
    session.execute(
        update(StudyPrediction)
        .where(
            StudyPrediction.model_version_id == model_version_id,
            StudyPrediction.complete.is_(False),
            StudyPrediction.shadow.is_(True),
        )
        .values(shadow=False)
    )
    session.flush()
    return len(changed)
