"""Every SQL example in docs/database.md runs on PostgreSQL and SQLite and returns what it promises."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from sqlalchemy import text

from storage.db.engine import make_engine, make_session_factory
from storage.db.outbox import NewObject, add_report
from storage.db.tables import Instance, ModelVersion, Prediction, Series, Study, StudyPrediction

DATABASE_DOC = (Path(__file__).resolve().parents[2] / "docs" / "database.md").read_text()
EXAMPLES = re.findall(
    r"<!-- sql:(any|postgresql|sqlite) -->\n```sql\n(.*?)```", DATABASE_DOC, flags=re.DOTALL
)
STUDY_UID = "1.2.826.0.1.3680043.8.498.1"


def _examples(dialect: str) -> list[str]:
    return [sql for tag, sql in EXAMPLES if tag in ("any", dialect)]


def _model(version: str, status: str, now: dt.datetime) -> ModelVersion:
    return ModelVersion(
        version=version,
        artifact_uri=f"file:///m/{version}",
        sha256="0" * 64,
        card={},
        metrics={},
        status=status,
        created_at=now,
    )


def _study_prediction(
    study: Study, model: ModelVersion, label: str, updated_at: dt.datetime
) -> StudyPrediction:
    p = {name: (0.8 if name == label else 0.05) for name in ("Cyst", "Normal", "Stone", "Tumor")}
    return StudyPrediction(
        study_id=study.id, model_version_id=model.id, label=label,
        p_cyst=p["Cyst"], p_normal=p["Normal"], p_stone=p["Stone"], p_tumor=p["Tumor"],
        n_cyst=0, n_normal=1, n_stone=int(label == "Stone"), n_tumor=int(label == "Tumor"),
        n_instances=2, complete=True, completed_at=updated_at, updated_at=updated_at,
    )  # fmt: skip


def _indeterminate(study: Study, model: ModelVersion, updated_at: dt.datetime) -> StudyPrediction:
    """The rule said Normal, but the evidence is below the model's threshold: label withheld."""
    row = _study_prediction(study, model, "Normal", updated_at)
    row.indeterminate_reason, row.evidence, row.n_shifted = "low_evidence", 0.41, 0
    return row


def _seed(url: str, now: dt.datetime) -> None:
    """ACC0001 (two slices, the second a Stone) and ACC0002 (Normal) under v1, an hour ago;
    ACC0001 again under v2 as Tumor, two days ago; ACC0002 under v2 indeterminate (label withheld)."""
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            v1, v2 = _model("v1", "retired", now), _model("v2", "active", now)
            session.add_all([v1, v2])
            studies = {}
            for uid, accession, slice_labels in [
                (STUDY_UID, "ACC0001", ["Normal", "Stone"]),
                ("1.2.9", "ACC0002", ["Normal", "Normal"]),
            ]:
                study = Study(
                    study_instance_uid=uid,
                    accession_number=accession,
                    first_received_at=now,
                    last_received_at=now,
                )
                series = Series(series_instance_uid=f"{uid}.1", study=study, modality="CT")
                session.add_all([study, series])
                for i, label in enumerate(slice_labels):
                    instance = Instance(
                        sop_instance_uid=f"{uid}.1.{i}",
                        series=series,
                        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                        transfer_syntax_uid="1.2.840.10008.1.2.1",
                        archive_uri=f"file:///a/{uid}/{i}",
                        sha256="0" * 64,
                        size_bytes=1000,
                        received_at=now,
                        updated_at=now,
                        state="processed",
                    )
                    session.add(instance)
                    session.flush()
                    p_stone = 0.9 if label == "Stone" else 0.05
                    session.add(
                        Prediction(
                            instance_id=instance.id,
                            frame=0,
                            model_version_id=v1.id,
                            label=label,
                            p_cyst=0.05,
                            p_normal=0.9 - p_stone + 0.05,
                            p_stone=p_stone,
                            p_tumor=0.0,
                            created_at=now,
                        )
                    )
                studies[accession] = study
            session.flush()
            hour_ago, two_days_ago = now - dt.timedelta(hours=1), now - dt.timedelta(days=2)
            session.add_all(
                [
                    _study_prediction(studies["ACC0001"], v1, "Stone", hour_ago),
                    _study_prediction(studies["ACC0002"], v1, "Normal", hour_ago),
                    _study_prediction(studies["ACC0001"], v2, "Tumor", two_days_ago),
                    _indeterminate(studies["ACC0002"], v2, hour_ago),
                ]
            )
            session.flush()
            # ACC0001's v1 result has a report whose delivery is still pending.
            add_report(
                session,
                study_id=studies["ACC0001"].id,
                model_version_id=v1.id,
                revision=1,
                label="Stone",
                key_slices=[],
                objects=[NewObject("sr", "1.2.840.10008.5.1.4.1.1.88.34", f"{STUDY_UID}.9", b"DICM")],
                destinations=["PACS@pacs:104"],
                build_error=None,
                now=hour_ago,
            )
            session.commit()
    finally:
        engine.dispose()


def test_readme_has_the_promised_examples() -> None:
    """docs/database.md shows the six documented queries, with both dialects of the 24-hour one."""
    assert len(_examples("postgresql")) == 6
    assert len(_examples("sqlite")) == 6


def test_readme_sql_examples_run_and_answer(migrated_database_url: str) -> None:
    """Each query of docs/database.md runs on this database and returns the rows the seeded data implies."""
    _seed(migrated_database_url, dt.datetime.now(dt.UTC))
    engine = make_engine(migrated_database_url)
    dialect = "postgresql" if engine.dialect.name == "postgresql" else "sqlite"
    try:
        with engine.connect() as connection:
            by_accession, abnormal, slices, undelivered, indeterminate, counts = (
                connection.execute(text(sql)).all() for sql in _examples(dialect)
            )
    finally:
        engine.dispose()
    # Newest first: v1 (an hour old) before v2 (two days old).
    assert [(r.model_version, r.label) for r in by_accession] == [("v1", "Stone"), ("v2", "Tumor")]
    assert [(r.accession_number, r.model_version, r.label) for r in abnormal] == [("ACC0001", "v1", "Stone")]
    assert [(r.sop_instance_uid, r.frame, r.label) for r in slices] == [
        (f"{STUDY_UID}.1.0", 0, "Normal"),
        (f"{STUDY_UID}.1.1", 0, "Stone"),
    ]
    assert slices[1].p_stone == pytest.approx(0.9)
    assert [(r.accession_number, r.revision, r.delivery_state) for r in undelivered] == [
        ("ACC0001", 1, "pending")
    ]
    assert [(r.accession_number, r.indeterminate_reason, r.evidence) for r in indeterminate] == [
        ("ACC0002", "low_evidence", pytest.approx(0.41))
    ]
    # NULL (indeterminate) sorts first on SQLite and last on PostgreSQL: compare as a set.
    assert {(r.model_version, r.label, r.n_studies) for r in counts} == {
        ("v1", "Normal", 1),
        ("v1", "Stone", 1),
        ("v2", "Tumor", 1),
        ("v2", None, 1),
    }
