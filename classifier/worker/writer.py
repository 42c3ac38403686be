"""One batch into the database: rows for every instance, predictions, and recomputed study results.

Called inside one transaction that the worker commits; every statement is idempotent, so a
re-delivered batch changes nothing and a crash before the commit leaves nothing behind.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session

from classifier.study.policy import StudyDecision, StudyPolicy, decide
from classifier.worker.decoding import PoisonInstance
from classifier.worker.predict import Predicted
from common.vocabulary import CLASS_NAMES
from storage.db.results import (
    InstanceRow,
    PredictionRow,
    SeriesRow,
    StudyAggregate,
    StudyRow,
    forget_changed_instances,
    insert_predictions,
    study_aggregates,
    study_ids_of_instances,
    upsert_instances,
    upsert_series,
    upsert_studies,
    upsert_study_prediction,
)
from storage.db.uid_conflicts import conflicting_events
from storage.stream.events import InstanceEvent


def prediction_rows(p: Predicted) -> list[PredictionRow]:
    """One row per frame: the top class, the probabilities and, with a shift detector, its score and flag."""
    e = p.instance.event
    return [
        PredictionRow(
            e.sop_instance_uid,
            frame,
            CLASS_NAMES[int(np.argmax(probs))],
            tuple(float(v) for v in probs),
            None if p.shift_scores is None else float(p.shift_scores[frame]),
            None if p.shifted is None else bool(p.shifted[frame]),
        )
        for frame, probs in enumerate(p.probabilities)
    ]


def recompute_studies(
    session: Session,
    *,
    study_ids: set[int],
    model_version_id: int,
    policy: StudyPolicy,
    now: dt.datetime,
    shadow: bool = False,
) -> list[tuple[StudyAggregate, StudyDecision]]:
    """Aggregate each study's predictions of the model version and write its decision (re-opened)."""
    out = []
    for aggregate in study_aggregates(
        session,
        study_ids=study_ids,
        model_version_id=model_version_id,
        min_probability=policy.rule.min_probability,
    ):
        decision = decide(
            slice_probabilities=aggregate.slice_probabilities,
            n_shifted=aggregate.n_shifted,
            policy=policy,
        )
        upsert_study_prediction(
            session,
            aggregate=aggregate,
            model_version_id=model_version_id,
            label=decision.label,
            now=now,
            shadow=shadow,
            indeterminate_reason=decision.indeterminate_reason,
            evidence=decision.evidence,
        )
        out.append((aggregate, decision))
    return out


@dataclass(frozen=True, slots=True)
class BatchWritten:
    new_prediction_rows: int
    studies_recomputed: list[tuple[StudyAggregate, StudyDecision]]
    reclassified: frozenset[str] = frozenset()  # SOP Instance UIDs whose content changed
    # What was written: the batch without the instances left out for a reused SOP Instance UID
    # (never announced either); poison keeps its dead letter, whether its row was written or not.
    predicted: tuple[Predicted, ...] = ()


def _instance_row(event: InstanceEvent, *, state: str, reason: str | None, frames: int) -> InstanceRow:
    return InstanceRow.of_event(
        event, received_at=event.received_at, state=state, frames=frames, reason=reason
    )


def _without_uid_conflicts(
    session: Session, predicted: Sequence[Predicted], poisoned: Sequence[PoisonInstance]
) -> tuple[list[Predicted], list[PoisonInstance]]:
    """The batch without the instances whose SOP Instance UID another study already has (the one
    check of the worker's batch, in its transaction; each conflict logged as not classified)."""
    events = [p.instance.event for p in predicted] + [p.event for p in poisoned if p.event is not None]
    conflicts = conflicting_events(session, events, action="not_classified")

    def kept(e: InstanceEvent | None) -> bool:
        return e is None or (e.sop_instance_uid, e.study_instance_uid) not in conflicts

    return [p for p in predicted if kept(p.instance.event)], [p for p in poisoned if kept(p.event)]


def write_batch(
    session: Session,
    *,
    predicted: Sequence[Predicted],
    poisoned: Sequence[PoisonInstance],
    model_version_id: int,
    policy: StudyPolicy,
    now: dt.datetime,
) -> BatchWritten:
    """Write one batch (no commit). Poison with a valid event marks its instance failed/skipped.
    An instance whose SOP Instance UID belongs to another study is left out (`storage.db.uid_conflicts`)."""
    predicted, poisoned = _without_uid_conflicts(session, predicted, poisoned)
    studies: list[StudyRow] = []
    series: list[SeriesRow] = []
    instances: list[InstanceRow] = []
    predictions: list[PredictionRow] = []
    # Poison first: within one batch, a processed delivery of the same instance wins.
    for poison in poisoned:
        e = poison.event
        if e is None:
            continue  # not an event at all: nothing to mark, the dead letter keeps it
        studies.append(StudyRow(e.study_instance_uid, None, e.received_at))
        series.append(SeriesRow(e.series_instance_uid, e.study_instance_uid, e.modality))
        frames = e.number_of_frames
        instances.append(
            _instance_row(e, state=poison.error.state, reason=poison.error.reason, frames=frames)
        )

    for p in predicted:
        e = p.instance.event
        studies.append(
            StudyRow(
                e.study_instance_uid,
                p.instance.accession_number,
                e.received_at,
                p.instance.accession_number_issuer,
            )
        )
        series.append(SeriesRow(e.series_instance_uid, e.study_instance_uid, p.instance.modality))
        instances.append(_instance_row(e, state="processed", reason=None, frames=len(p.probabilities)))
        predictions.extend(prediction_rows(p))

    # A re-sent instance with other content (another sha256) is classified again, not kept as it was.
    reclassified = forget_changed_instances(
        session, instances=[(p.instance.event.sop_instance_uid, p.instance.event.sha256) for p in predicted]
    )
    study_ids = upsert_studies(session, studies=studies)
    series_ids = upsert_series(session, series=series, study_ids=study_ids)
    instance_ids = upsert_instances(session, instances=instances, series_ids=series_ids, now=now)
    new_instance_ids = insert_predictions(
        session,
        predictions=predictions,
        instance_ids=instance_ids,
        model_version_id=model_version_id,
        now=now,
    )
    # Only studies that gained predictions change (and re-open); a pure replay leaves them alone.
    changed = study_ids_of_instances(session, instance_ids=new_instance_ids)
    recomputed = recompute_studies(
        session, study_ids=changed, model_version_id=model_version_id, policy=policy, now=now
    )
    new_rows = sum(
        len(p.probabilities)
        for p in predicted
        if instance_ids[p.instance.event.sop_instance_uid] in new_instance_ids
    )
    return BatchWritten(
        new_prediction_rows=new_rows,
        studies_recomputed=recomputed,
        reclassified=frozenset(reclassified),
        predicted=tuple(predicted),
    )
