"""Which archived instances a reprocess asks for: read from the catalogue (the `instances` table),
not from the topic, so the topic's retention does not limit how far back a reprocess can reach.

Keyword-only functions that never commit.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Select, and_, exists, func, or_, select
from sqlalchemy.orm import Session

from storage.db.results import ARCHIVED_FILE_FIELDS
from storage.db.tables import Instance, Prediction, Series, Study
from storage.stream.events import InstanceEvent

# Instances that can be classified: `skipped` ones (not CT) never will be.
REPROCESSABLE_STATES = ("received", "processed", "failed")

# The catalogue's instance columns an event carries unchanged (the same names on both sides).
_COPIED_FROM_CATALOGUE = ("sop_instance_uid", *ARCHIVED_FILE_FIELDS, "received_at", "instance_number")


@dataclass(frozen=True, slots=True)
class Selection:
    """What to reprocess; the filters given are combined with AND. `everything` must be set
    explicitly when no filter is given, so an empty command line never means the whole archive."""

    study_uids: tuple[str, ...] = ()
    accession_numbers: tuple[str, ...] = ()
    received_since: dt.datetime | None = None
    received_until: dt.datetime | None = None
    everything: bool = False

    @property
    def empty(self) -> bool:
        return not (
            self.study_uids
            or self.accession_numbers
            or self.received_since
            or self.received_until
            or self.everything
        )


# Where a page ended: (received_at, id) of its last row, in the selection's order.
Position = tuple[dt.datetime, int]


@dataclass(frozen=True, slots=True)
class SelectedInstances:
    events: list[InstanceEvent]  # to classify, in receipt order
    already_done: int  # selected, but already with predictions of the target version
    last: Position | None = None  # the last row read; None when no row was read (the selection is exhausted)


def _query(selection: Selection) -> Select[Instance, str, str, str | None]:
    query = (
        select(Instance, Series.series_instance_uid, Study.study_instance_uid, Series.modality)
        .join(Series, Instance.series_id == Series.id)
        .join(Study, Series.study_id == Study.id)
        .where(Instance.state.in_(REPROCESSABLE_STATES))
        .order_by(Instance.received_at, Instance.id)
    )
    if selection.study_uids:
        query = query.where(Study.study_instance_uid.in_(selection.study_uids))
    if selection.accession_numbers:
        query = query.where(Study.accession_number.in_(selection.accession_numbers))
    # Whole studies by their receipt: a study received in the window comes with all its instances.
    if selection.received_since is not None:
        query = query.where(Study.last_received_at >= selection.received_since)
    if selection.received_until is not None:
        query = query.where(Study.first_received_at < selection.received_until)
    return query


def count_selected(session: Session, *, selection: Selection) -> int:
    """How many instances the selection holds (classified or not): the total for a progress bar."""
    if selection.empty:
        raise ValueError("nothing selected: give studies, accession numbers, a time range, or everything")
    return int(
        session.scalar(select(func.count()).select_from(_query(selection).order_by(None).subquery())) or 0
    )


def select_for_reprocess(
    session: Session,
    *,
    selection: Selection,
    model_version_id: int,
    after: Position | None = None,
    limit: int | None = None,
) -> SelectedInstances:
    """The selected instances as instance events, less those the target version already classified
    (reprocessing them again would add nothing: predictions are unique per instance, frame, version).

    `after` and `limit` read one page in receipt order (keyset paging), so a reprocess of a whole
    archive never holds it in memory: pass the previous page's `last` until it is None.
    """
    if selection.empty:
        raise ValueError("nothing selected: give studies, accession numbers, a time range, or everything")
    done = exists().where(
        Prediction.instance_id == Instance.id, Prediction.model_version_id == model_version_id
    )
    query = _query(selection).add_columns(done.label("done"))
    if after is not None:
        received_at, instance_id = after
        query = query.where(
            or_(
                Instance.received_at > received_at,
                and_(Instance.received_at == received_at, Instance.id > instance_id),
            )
        )
    if limit is not None:
        query = query.limit(limit)
    events: list[InstanceEvent] = []
    already_done = 0
    last: Position | None = None
    for instance, series_uid, study_uid, modality, is_done in session.execute(query):
        last = (instance.received_at, instance.id)
        if is_done:
            already_done += 1
            continue
        copied = {name: getattr(instance, name) for name in _COPIED_FROM_CATALOGUE}
        events.append(
            InstanceEvent(
                study_instance_uid=study_uid,
                series_instance_uid=series_uid,
                modality=modality,
                number_of_frames=instance.number_of_frames or 1,
                **copied,
            )
        )
    return SelectedInstances(events=events, already_done=already_done, last=last)
