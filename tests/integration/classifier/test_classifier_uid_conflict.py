"""A SOP Instance UID reused in another study: the first study keeps it (issue 23, item 6)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import numpy as np
import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker
from structlog.testing import capture_logs

from classifier.study.policy import SOURCE_DEFAULT, StudyPolicy
from classifier.study.rule import StudyRule
from classifier.worker.decoding import DecodedInstance
from classifier.worker.shadow import write_version
from classifier.worker.writer import Predicted, write_batch
from ingest.catalog import record_events
from storage.db.engine import make_engine, make_session_factory
from storage.db.model_versions import register_model_version
from storage.db.tables import Instance, Prediction, Series, Study
from storage.stream.contract import Record
from storage.stream.events import InstanceEvent

T0 = dt.datetime(2026, 12, 6, 12, tzinfo=dt.UTC)
SOP = "1.2.826.0.1.3680043.99.6.1"
FIRST, SECOND = "1.2.826.0.1.3680043.99.6.100", "1.2.826.0.1.3680043.99.6.200"
POLICY = StudyPolicy(StudyRule(min_slices=1, min_probability=0.0), SOURCE_DEFAULT)


@pytest.fixture
def sessions(migrated_database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(migrated_database_url)
    yield make_session_factory(engine)
    engine.dispose()


def _event(study: str, sha: str = "0" * 64) -> InstanceEvent:
    return InstanceEvent(
        study_instance_uid=study,
        series_instance_uid=f"{study}.1",
        sop_instance_uid=SOP,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        modality="CT",
        archive_uri=f"file:///archive/{study}/{study}.1/{SOP}.dcm",
        sha256=sha,
        size_bytes=100,
        calling_ae="SCU",
        received_at=T0,
        instance_number=1,
        number_of_frames=1,
    )


def _predicted(event: InstanceEvent, offset: int) -> Predicted:
    record = Record(topic="instances", partition=0, offset=offset, key=event.key, value=event.to_json())
    instance = DecodedInstance(
        record=record,
        event=event,
        accession_number=None,
        modality="CT",
        tensors=np.zeros((1, 1, 1, 3), dtype=np.float32),
        preprocessing=None,  # type: ignore[arg-type]  # not read by the writer
    )
    return Predicted(instance, np.array([[0.1, 0.2, 0.3, 0.4]]))


def _model(sessions: sessionmaker[Session]) -> int:
    with sessions.begin() as session:
        row = register_model_version(
            session,
            version="v1",
            artifact_uri="/m",
            sha256="0" * 64,
            card={},
            metrics={},
            manifest_hash=None,
            now=T0,
        )
        return int(row.id)


def _study_of_instance(session: Session) -> str:
    return str(
        session.scalar(
            select(Study.study_instance_uid)
            .join(Series, Series.study_id == Study.id)
            .join(Instance, Instance.series_id == Series.id)
            .where(Instance.sop_instance_uid == SOP)
        )
    )


def test_the_worker_leaves_a_reused_uid_with_the_first_study(sessions: sessionmaker[Session]) -> None:
    """The second study's instance with the same SOP Instance UID (other content) is neither
    recorded nor re-classified: the row, its prediction and the first study's result stay."""
    model = _model(sessions)
    with sessions.begin() as session:
        write_batch(
            session,
            predicted=[_predicted(_event(FIRST), 0)],
            poisoned=[],
            model_version_id=model,
            policy=POLICY,
            now=T0,
        )
    with capture_logs() as logs, sessions.begin() as session:
        written = write_batch(
            session,
            predicted=[_predicted(_event(SECOND, sha="1" * 64), 1)],
            poisoned=[],
            model_version_id=model,
            policy=POLICY,
            now=T0 + dt.timedelta(seconds=5),
        )
    assert written.new_prediction_rows == 0 and written.studies_recomputed == []
    conflicts = [e for e in logs if e["event"] == "instance_uid_conflict"]
    assert [(e["recorded_study_instance_uid"], e["study_instance_uid"]) for e in conflicts] == [
        (FIRST, SECOND)
    ]
    with sessions() as session:
        assert _study_of_instance(session) == FIRST
        assert session.scalar(select(Instance.sha256)) == "0" * 64
        assert len(session.scalars(select(Prediction)).all()) == 1
        results = session.execute(text("SELECT study_instance_uid, n_instances FROM study_results")).all()
        assert [tuple(r) for r in results] == [(FIRST, 1)]
        per_instance = session.execute(text("SELECT study_instance_uid FROM instance_results")).all()
        assert [r[0] for r in per_instance] == [FIRST]


def test_the_catalogue_leaves_a_reused_uid_with_the_first_study(sessions: sessionmaker[Session]) -> None:
    """The catalogue records the first study's instance and skips the reuse, in a later batch or
    in the same one."""
    with capture_logs() as logs:
        with sessions.begin() as session:
            record_events(session, events=[_event(FIRST), _event(SECOND)], now=T0)
        with sessions.begin() as session:
            record_events(session, events=[_event(SECOND)], now=T0)
    with sessions() as session:
        assert _study_of_instance(session) == FIRST
    assert [e["action"] for e in logs if e["event"] == "instance_uid_conflict"] == ["not_catalogued"] * 2


def test_a_shadow_model_adds_nothing_for_a_reused_uid(sessions: sessionmaker[Session]) -> None:
    """A shadow model's prediction of the later study's file is not attached to the first study's instance."""
    model = _model(sessions)
    with sessions.begin() as session:
        shadow = int(
            register_model_version(
                session,
                version="v2",
                artifact_uri="/m2",
                sha256="1" * 64,
                card={},
                metrics={},
                manifest_hash=None,
                now=T0,
            ).id
        )
        write_batch(
            session,
            predicted=[_predicted(_event(FIRST), 0)],
            poisoned=[],
            model_version_id=model,
            policy=POLICY,
            now=T0,
        )
    with sessions.begin() as session:
        added = write_version(
            session,
            predicted=[_predicted(_event(SECOND, sha="1" * 64), 1)],
            model_version_id=shadow,
            policy=POLICY,
            now=T0,
        )
    assert added == 0
    with sessions.begin() as session:
        assert (
            write_version(
                session,
                predicted=[_predicted(_event(FIRST), 0)],
                model_version_id=shadow,
                policy=POLICY,
                now=T0,
            )
            == 1
        )
