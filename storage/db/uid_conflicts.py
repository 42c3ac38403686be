"""A SOP Instance UID is unique worldwide (DICOM PS3.5 §9): the same UID in another study is a conflict.

The first study to be recorded keeps the UID. An instance that arrives later under the same SOP
Instance UID in another study is not recorded by the catalogue or the worker: its row, state and
predictions stay with the first study (before this check the row and its predictions moved to the
later study, leaving the first one complete with no instances). The listener cannot tell (with
Kafka it has no database), so it acknowledges and archives the later file under its own study
path; the conflict is logged (`instance_uid_conflict`) where the database sees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.db.tables import Instance, Series, Study
from storage.stream.events import InstanceEvent

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class UidConflict:
    sop_instance_uid: str
    recorded_study_instance_uid: str  # the study that keeps the UID
    study_instance_uid: str  # the study of the instance that is not recorded


def uid_conflicts(
    session: Session, *, instances: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], UidConflict]:
    """The (SOP Instance UID, Study Instance UID) pairs of `instances` whose SOP Instance UID
    already belongs to another study, in the database or earlier in `instances` (first one wins)."""
    if not instances:
        return {}
    owner = _recorded_studies(session, sop_instance_uids={sop for sop, _ in instances})
    conflicts = {}
    for sop, study in instances:
        first = owner.setdefault(sop, study)
        if first != study:
            conflicts[(sop, study)] = UidConflict(sop, first, study)
    return conflicts


def conflicting_events(
    session: Session, events: Sequence[InstanceEvent], *, action: str
) -> set[tuple[str, str]]:
    """The (SOP Instance UID, Study Instance UID) of `events` in conflict, each logged as
    `instance_uid_conflict` with what the caller does about it (`action`)."""
    conflicts = uid_conflicts(session, instances=[(e.sop_instance_uid, e.study_instance_uid) for e in events])
    for conflict in conflicts.values():
        log.warning(
            "instance_uid_conflict",
            sop_instance_uid=conflict.sop_instance_uid,
            recorded_study_instance_uid=conflict.recorded_study_instance_uid,
            study_instance_uid=conflict.study_instance_uid,
            action=action,
        )
    return set(conflicts)


def _recorded_studies(session: Session, *, sop_instance_uids: set[str]) -> dict[str, str]:
    rows = session.execute(
        select(Instance.sop_instance_uid, Study.study_instance_uid)
        .join(Series, Instance.series_id == Series.id)
        .join(Study, Series.study_id == Study.id)
        .where(Instance.sop_instance_uid.in_(sorted(sop_instance_uids)))
    )
    return {sop: study for sop, study in rows}
