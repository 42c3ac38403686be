"""A study's evidence in SQL: over the slices that decided its label (issue 27), on SQLite and PostgreSQL.

A focal stone, sure on 2 of 6 slices, written through the worker's writer in two batches: under a card
with the current evidence definition `study_results` shows Stone with evidence 0.925; under a card from
before the definition (no `evidence` field) the same predictions keep the old meaning, the mean over all
slices (0.32), and the study stays indeterminate as it always was.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from worker_steps_kit import T0, decoded

from classifier.study.evidence import DECIDING_SLICES
from classifier.study.policy import PolicySettings
from classifier.worker.writer import Predicted, write_batch
from storage.db.engine import make_engine, make_session_factory
from storage.db.model_versions import register_model_version

STUDY = "1.2.826.0.1.3680043.99.27.1"
# Cyst, Normal, Stone, Tumor on six slices: a stone the model is sure of on two.
STONE = (0.95, 0.9, 0.02, 0.02, 0.02, 0.02)
SLICES = [np.array([[0.02, 1 - s - 0.03, s, 0.01]]) for s in STONE]
OLD_CARD: dict[str, Any] = {
    "study_rule": {"k": 2, "t": 0.5},
    "abstention": {"min_evidence": 0.8, "target_accuracy": 0.9},
}
NEW_CARD: dict[str, Any] = {
    **OLD_CARD,
    "abstention": {**OLD_CARD["abstention"], "evidence": DECIDING_SLICES},
}


@pytest.fixture
def sessions(migrated_database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(migrated_database_url)
    yield make_session_factory(engine)
    engine.dispose()


def _predicted(i: int, probabilities: np.ndarray) -> Predicted:
    return Predicted(decoded(i, study=STUDY), probabilities)


def _write(sessions: sessionmaker[Session], version: str, card: dict[str, Any]) -> None:
    """The six slices under `version`, in two batches (the second recomputes the study)."""
    with sessions.begin() as session:
        model = register_model_version(
            session,
            version=version,
            artifact_uri=f"/m/{version}",
            sha256="0" * 64,
            card={"decision": card},
            metrics={},
            manifest_hash=None,
            now=T0,
        ).id
    policy = PolicySettings().policy(card)
    for batch, when in ((range(0, 3), 0), (range(3, 6), 5)):
        with sessions.begin() as session:
            write_batch(
                session,
                predicted=[_predicted(i, SLICES[i]) for i in batch],
                poisoned=[],
                model_version_id=int(model),
                policy=policy,
                now=T0 + dt.timedelta(seconds=when),
            )


def test_a_focal_stone_is_decided_on_its_two_sure_slices_and_an_old_card_keeps_its_meaning(
    sessions: sessionmaker[Session],
) -> None:
    """New card: Stone, evidence = mean of the 2 deciding slices. Old card: label NULL, low_evidence,
    evidence = mean over all 6 slices, as before the definition was versioned."""
    _write(sessions, "new", NEW_CARD)
    _write(sessions, "old", OLD_CARD)
    with sessions() as session:
        rows = {
            r.model_version: r
            for r in session.execute(
                text(
                    "SELECT model_version, label, indeterminate_reason, evidence, n_instances "
                    "FROM study_results WHERE study_instance_uid = :uid"
                ),
                {"uid": STUDY},
            )
        }
    assert (rows["new"].label, rows["new"].indeterminate_reason, rows["new"].n_instances) == (
        "Stone",
        None,
        6,
    )
    assert rows["new"].evidence == pytest.approx(0.925)
    assert (rows["old"].label, rows["old"].indeterminate_reason) == (None, "low_evidence")
    assert rows["old"].evidence == pytest.approx(sum(STONE) / 6)
