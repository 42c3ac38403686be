"""Ground-truth labels: recording them and joining them to archived instances.

Keyword-only functions that take a `Session` and never commit: the caller owns the transaction.
A label names either one instance (`sop_instance_uid`) or a whole study (`study_instance_uid`);
labels may arrive before their instances, so they are keyed by UID, not by foreign key.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from common.vocabulary import CLASS_NAMES
from storage.db.tables import Instance, Label, Series, Study


class InvalidLabel(ValueError):
    """A label that names no class we know, or not exactly one target."""


@dataclass(frozen=True, slots=True)
class LabelledInstance:
    """An archived instance with its effective label (an instance label beats a study label)."""

    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    archive_uri: str
    sha256: str
    number_of_frames: int
    label: str
    label_scope: str  # "instance" or "study"


def add_label(
    session: Session,
    *,
    label: str,
    source: str,
    now: dt.datetime,
    sop_instance_uid: str | None = None,
    study_instance_uid: str | None = None,
    annotator: str | None = None,
) -> Label:
    """Record one label for an instance or a study (exactly one of the two UIDs)."""
    if label not in CLASS_NAMES:
        raise InvalidLabel(f"unknown class {label!r}; expected one of {', '.join(CLASS_NAMES)}")
    if (sop_instance_uid is None) == (study_instance_uid is None):
        raise InvalidLabel("a label names exactly one target: an instance UID or a study UID")
    if not source:
        raise InvalidLabel("a label needs a source (e.g. 'radiologist', 'pathology', 'csv:file.csv')")
    row = Label(
        sop_instance_uid=sop_instance_uid,
        study_instance_uid=study_instance_uid,
        label=label,
        source=source,
        annotator=annotator,
        created_at=now,
    )
    session.add(row)
    session.flush()
    return row


def count_labels_since(session: Session, *, since: dt.datetime | None) -> int:
    """Labels recorded after `since` (all of them when `since` is None)."""
    query = select(func.count(Label.id))
    if since is not None:
        query = query.where(Label.created_at > since)
    return int(session.scalar(query) or 0)


def _latest_by_target(rows: list[Label], attribute: str) -> dict[str, Label]:
    """The most recent label per target: a later label corrects an earlier one."""
    latest: dict[str, Label] = {}
    for row in sorted(rows, key=lambda r: (r.created_at, r.id)):
        latest[getattr(row, attribute)] = row
    return latest


def labelled_instances(session: Session) -> list[LabelledInstance]:
    """Every archived instance that has a label, with its effective label, ordered by SOP Instance UID."""
    labels = list(session.scalars(select(Label)))
    by_instance = _latest_by_target([r for r in labels if r.sop_instance_uid is not None], "sop_instance_uid")
    by_study = _latest_by_target(
        [r for r in labels if r.study_instance_uid is not None], "study_instance_uid"
    )
    if not by_instance and not by_study:
        return []
    query = (
        select(Instance, Series.series_instance_uid, Study.study_instance_uid)
        .join(Series, Instance.series_id == Series.id)
        .join(Study, Series.study_id == Study.id)
        .where(
            Instance.sop_instance_uid.in_(list(by_instance)) | Study.study_instance_uid.in_(list(by_study))
        )
        .order_by(Instance.sop_instance_uid)
    )
    result: list[LabelledInstance] = []
    for instance, series_uid, study_uid in session.execute(query):
        own = by_instance.get(instance.sop_instance_uid)
        chosen, scope = (own, "instance") if own is not None else (by_study[study_uid], "study")
        result.append(
            LabelledInstance(
                sop_instance_uid=instance.sop_instance_uid,
                series_instance_uid=series_uid,
                study_instance_uid=study_uid,
                archive_uri=instance.archive_uri,
                sha256=instance.sha256,
                number_of_frames=instance.number_of_frames or 1,
                label=chosen.label,
                label_scope=scope,
            )
        )
    return result
