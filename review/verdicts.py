"""A radiologist's verdict on a study result, written as a label the trainer reads.

Confirm and correct go through the same code as `kidneyct label` (`training.label_input.make_row`
then `storage.db.labels.add_label`), as a study label with source `radiologist` and the signed-in user
as annotator. Not assessable writes no label (no class to learn) but is kept as a verdict. A changed
verdict is a new row; the trainer takes a study's newest label.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session

from common.vocabulary import CLASS_NAMES
from review import audit
from storage.db.labels import add_label
from storage.db.tables import ReviewVerdict, Study
from training.label_input import LabelInputError, make_row, normalise_class

SOURCE = "radiologist"
MAX_COMMENT = 2000


class InvalidVerdict(ValueError):
    """A verdict that names no known action or class."""


@dataclass(frozen=True, slots=True)
class Verdict:
    action: str  # confirm, correct, not_assessable
    label: str | None  # the class for `correct`
    comment: str | None


def parse_verdict(action: str, label: str | None, comment: str | None) -> Verdict:
    comment = (comment or "").strip()[:MAX_COMMENT] or None
    if action == "confirm" or action == "not_assessable":
        return Verdict(action, None, comment)
    if action == "correct":
        cls = normalise_class(label or "")
        if cls is None:
            raise InvalidVerdict(f"correct to one of {', '.join(CLASS_NAMES)}")
        return Verdict(action, cls, comment)
    raise InvalidVerdict("unknown verdict")


def record_verdict(
    session: Session,
    *,
    study_id: int,
    model_version_id: int,
    ai_label: str,
    verdict: Verdict,
    username: str,
    address: str | None,
    now: dt.datetime,
) -> ReviewVerdict:
    """The verdict row, its label (confirm: the AI's class; correct: the reader's) and its audit row."""
    study = session.get(Study, study_id)
    if study is None:
        raise InvalidVerdict("no such study")
    label_class = ai_label if verdict.action == "confirm" else verdict.label
    label_id = None
    if label_class is not None:
        try:
            row = make_row(
                label=label_class,
                source=SOURCE,
                annotator=username,
                instance=None,
                study=study.study_instance_uid,
                where="review",
            )
        except LabelInputError as exc:
            raise InvalidVerdict(str(exc)) from exc
        label_id = add_label(
            session,
            label=row.label,
            source=row.source,
            annotator=row.annotator,
            study_instance_uid=row.study_instance_uid,
            now=now,
        ).id
    stored = ReviewVerdict(
        study_id=study_id,
        model_version_id=model_version_id,
        ai_label=ai_label,
        verdict=verdict.action,
        label=label_class,
        comment=verdict.comment,
        username=username,
        label_id=label_id,
        created_at=now,
    )
    session.add(stored)
    session.flush()
    detail = verdict.action if label_class is None else f"{verdict.action} {label_class}"
    audit.record(
        session,
        action="verdict_given",
        now=now,
        username=username,
        address=address,
        study_id=study_id,
        detail=detail,
    )
    return stored
