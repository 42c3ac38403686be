"""Every promotion is checked (the first one too), and a promotion re-opens the results PACS must see again.

Real databases (SQLite and PostgreSQL); the versions are imported ones (no manifest), so no model is
loaded: the decision rests on what their import recorded (parity, acceptance) or on --force --reason.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from storage.db.engine import make_engine, make_session_factory
from storage.db.outbox import add_report
from storage.db.tables import ModelVersion, Study, StudyPrediction
from training.acceptance import FLOOR_ACCURACY, MIN_PER_CLASS
from training.promotion import PromotionError, promote

T0 = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
CLASSES = ["Cyst", "Normal", "Stone", "Tumor"]


def _acceptance(accuracy: float, recall: float = 0.9, support: int = MIN_PER_CLASS) -> dict[str, Any]:
    return {
        "slices": 4 * support,
        "accuracy": accuracy,
        "recall": dict.fromkeys(CLASSES, recall),
        "support": dict.fromkeys(CLASSES, support),
        "confusion_matrix": [[support if i == j else 0 for j in range(4)] for i in range(4)],
        "classes": CLASSES,
    }


def _card(*, parity_checked: bool, acceptance: dict[str, Any] | None) -> dict[str, Any]:
    parity = {"checked": parity_checked, "max_abs_diff": 1e-7 if parity_checked else None, "note": "n"}
    return {"extra": {"import": {"parity": parity, "acceptance": acceptance, "forced": False}}}


@pytest.fixture
def sessions(migrated_database_url: str) -> sessionmaker[Session]:
    engine = make_engine(migrated_database_url)
    yield make_session_factory(engine)  # type: ignore[misc]
    engine.dispose()


def _version(
    session: Session, tmp_path: Path, name: str, card: dict[str, Any], status: str = "candidate"
) -> int:
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    row = ModelVersion(
        version=name,
        artifact_uri=folder.as_uri(),
        sha256="0" * 64,
        card=card,
        metrics={},
        status=status,
        created_at=T0,
    )
    session.add(row)
    session.flush()
    return row.id


def _promote(sessions: sessionmaker[Session], version: str, **kwargs: Any) -> Any:
    with sessions.begin() as session:
        return promote(session, version=version, force=kwargs.pop("force", False), now=T0, **kwargs)


@pytest.mark.parametrize(
    ("card", "phrase"),
    [
        (_card(parity_checked=True, acceptance=None), "has no acceptance result"),
        (_card(parity_checked=False, acceptance=None), "parity was not checked"),
        (_card(parity_checked=True, acceptance=_acceptance(FLOOR_ACCURACY - 0.05)), "below the floor"),
        (_card(parity_checked=True, acceptance=_acceptance(0.9, recall=0.2)), "not above chance"),
        (_card(parity_checked=True, acceptance=_acceptance(0.9, support=1)), "at least"),
    ],
    ids=["no-acceptance", "unchecked-parity", "below-floor", "class-at-chance", "too-few-slices"],
)
def test_a_first_model_needs_an_acceptance_result_that_clears_the_floor(
    sessions: sessionmaker[Session], tmp_path: Path, card: dict[str, Any], phrase: str
) -> None:
    """No active model: without acceptance, below the floor, a class at chance, too few slices: refused."""
    with sessions.begin() as session:
        _version(session, tmp_path, "v1", card)
    decision = _promote(sessions, "v1")
    assert not decision.promote and phrase in decision.reason
    with sessions() as session:
        row = session.scalars(select(ModelVersion).where(ModelVersion.version == "v1")).one()
        assert row.status == "candidate" and phrase in (row.promotion_note or "")


def test_a_first_model_with_a_good_acceptance_result_is_promoted(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """Acceptance above the floor, every class above chance: promoted, the note gives the figures."""
    with sessions.begin() as session:
        _version(session, tmp_path, "v1", _card(parity_checked=True, acceptance=_acceptance(0.95)))
    decision = _promote(sessions, "v1")
    assert decision.promote and not decision.forced
    assert "acceptance accuracy 0.950" in decision.reason


def test_force_needs_a_reason_and_records_it(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    """--force without a reason is refused; with one, the note records it (models list and the SR show the note)."""
    with sessions.begin() as session:
        _version(session, tmp_path, "v1", _card(parity_checked=False, acceptance=None))
    with pytest.raises(PromotionError, match="--reason"):
        _promote(sessions, "v1", force=True)
    decision = _promote(sessions, "v1", force=True, force_reason="vendor model, validated offline")
    assert decision.promote and decision.forced
    with sessions() as session:
        row = session.scalars(select(ModelVersion).where(ModelVersion.version == "v1")).one()
        assert row.status == "active"
        assert row.promotion_note.startswith("FORCED (reason: vendor model, validated offline)")


def _study_result(session: Session, study_id: int, version_id: int, label: str, *, shadow: bool) -> None:
    probabilities = {f"p_{c.lower()}": 0.9 if c == label else 0.1 for c in CLASSES}
    counts = {f"n_{c.lower()}": int(c == label) for c in CLASSES}
    session.add(
        StudyPrediction(
            study_id=study_id,
            model_version_id=version_id,
            label=label,
            n_instances=1,
            complete=True,
            completed_at=T0,
            updated_at=T0,
            shadow=shadow,
            **probabilities,
            **counts,
        )
    )


def test_promotion_reopens_the_results_that_differ_from_what_pacs_was_sent(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    """Shadow results already complete (the backfill queues nothing): the changed ones are re-opened as live
    results, so the sweep sends their new revision; an unchanged one is left as it is."""
    with sessions.begin() as session:
        old = _version(session, tmp_path, "old", _card(parity_checked=True, acceptance=None), status="active")
        new = _version(session, tmp_path, "new", _card(parity_checked=True, acceptance=_acceptance(0.95)))
        labels = {"1.2.3.1": ("Normal", "Tumor"), "1.2.3.2": ("Cyst", "Cyst")}
        for uid, (sent, now_label) in labels.items():
            study = Study(study_instance_uid=uid, first_received_at=T0, last_received_at=T0)
            session.add(study)
            session.flush()
            _study_result(session, study.id, old, sent, shadow=False)
            _study_result(session, study.id, new, now_label, shadow=True)
            add_report(
                session,
                study_id=study.id,
                model_version_id=old,
                revision=1,
                label=sent,
                key_slices=[],
                objects=[],
                destinations=[],
                build_error=None,
                now=T0,
            )
    decision = _promote(sessions, "new", force=True, force_reason="the old model is withdrawn")
    assert decision.promote and decision.reopened == 1
    with sessions() as session:
        rows = {
            uid: (complete, shadow)
            for uid, complete, shadow in session.execute(
                select(Study.study_instance_uid, StudyPrediction.complete, StudyPrediction.shadow)
                .join(Study, Study.id == StudyPrediction.study_id)
                .where(StudyPrediction.model_version_id == new)
            )
        }
    assert rows == {"1.2.3.1": (False, False), "1.2.3.2": (True, True)}
