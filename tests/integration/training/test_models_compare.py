"""`kidneyct models compare` on a fixture with known disagreements, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json

from click.testing import CliRunner

from common.vocabulary import CLASS_NAMES
from kidneyct.cli import cli
from storage.db.engine import make_engine, make_session_factory
from storage.db.labels import add_label
from storage.db.model_versions import register_model_version
from storage.db.results import (
    InstanceRow,
    PredictionRow,
    SeriesRow,
    StudyAggregate,
    StudyRow,
    insert_predictions,
    upsert_instances,
    upsert_series,
    upsert_studies,
    upsert_study_prediction,
)

T0 = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)
# study -> (A's label, B's label); s5 is classified by A only and must not count.
STUDIES = {
    "1.2.3.1": ("Tumor", "Tumor"),
    "1.2.3.2": ("Normal", "Stone"),
    "1.2.3.3": ("Cyst", "Normal"),
    "1.2.3.4": ("Normal", "Normal"),
    "1.2.3.5": ("Stone", None),
}


def _probabilities(label: str) -> tuple[float, ...]:
    return tuple(0.7 if c == label else 0.1 for c in CLASS_NAMES)


def _fixture(url: str) -> None:
    engine = make_engine(url)
    with make_session_factory(engine).begin() as s:
        ids = {
            v: register_model_version(
                s,
                version=v,
                artifact_uri=f"/nowhere/{v}",
                sha256="0" * 64,
                card={},
                metrics={},
                manifest_hash=None,
                now=T0,
            ).id
            for v in ("A", "B")
        }
        study_ids = upsert_studies(s, studies=[StudyRow(uid, f"ACC{uid[-1]}", T0) for uid in STUDIES])
        series_ids = upsert_series(
            s, series=[SeriesRow(f"{u}.1", u, "CT") for u in STUDIES], study_ids=study_ids
        )
        instance_ids = upsert_instances(
            s,
            instances=[
                InstanceRow(
                    f"{u}.1.1",
                    f"{u}.1",
                    "1.2.840.10008.5.1.4.1.1.2",
                    "1.2.840.10008.1.2.1",
                    f"file:///a/{u}",
                    "0" * 64,
                    1,
                    None,
                    1,
                    1,
                    T0,
                    "processed",
                )
                for u in STUDIES
            ],
            series_ids=series_ids,
            now=T0,
        )
        for which, version in enumerate(("A", "B")):
            rows = [
                PredictionRow(f"{u}.1.1", 0, labels[which], _probabilities(labels[which]))
                for u, labels in STUDIES.items()
                if labels[which]
            ]
            insert_predictions(
                s, predictions=rows, instance_ids=instance_ids, model_version_id=ids[version], now=T0
            )
            for u, labels in STUDIES.items():
                if labels[which] is None:
                    continue
                aggregate = StudyAggregate(
                    study_ids[u],
                    u,
                    1,
                    dict(zip(CLASS_NAMES, _probabilities(labels[which]), strict=True)),
                    {c: int(c == labels[which]) for c in CLASS_NAMES},
                    {c: int(c == labels[which]) for c in CLASS_NAMES},
                )
                upsert_study_prediction(
                    s, aggregate=aggregate, model_version_id=ids[version], label=labels[which], now=T0
                )
        # Truth: s1 Tumor, s2 Stone, s3 first Normal then corrected to Cyst (the later label wins);
        # s4 has no study label but its instance is labelled Normal.
        for uid, label, when in (
            ("1.2.3.1", "Tumor", 1),
            ("1.2.3.2", "Stone", 1),
            ("1.2.3.3", "Normal", 1),
            ("1.2.3.3", "Cyst", 2),
        ):
            add_label(
                s, label=label, source="test", study_instance_uid=uid, now=T0 + dt.timedelta(hours=when)
            )
        add_label(s, label="Normal", source="test", sop_instance_uid="1.2.3.4.1.1", now=T0)
    engine.dispose()


def _compare(url: str, *args: str) -> str:
    result = CliRunner().invoke(
        cli, ["models", "compare", "A", "B", *args], env={"KIDNEYCT_DATABASE_URL": url}
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_compare_prints_the_known_matrix_changes_and_accuracy(migrated_database_url: str) -> None:
    """Four studies both versions classified, two disagreements: the matrix, per-class changes and the
    accuracy against the latest labels are the ones built into the fixture, at both levels."""
    _fixture(migrated_database_url)
    out = json.loads(_compare(migrated_database_url, "--json"))
    study, instance = out
    assert study["level"] == "study" and study["n"] == 4 and study["agreement"] == 0.5
    expected = {a: dict.fromkeys(CLASS_NAMES, 0) for a in CLASS_NAMES}
    expected["Tumor"]["Tumor"] = expected["Normal"]["Stone"] = expected["Cyst"]["Normal"] = 1
    expected["Normal"]["Normal"] = 1
    assert study["matrix"] == expected and instance["matrix"] == expected
    assert study["per_class"]["Normal"] == {"a": 2, "b": 2, "kept": 1, "gained": 1, "lost": 1}
    assert study["per_class"]["Stone"] == {"a": 0, "b": 1, "kept": 0, "gained": 1, "lost": 0}
    assert study["accuracy"] == {"n_labelled": 3, "A": 2 / 3, "B": 2 / 3, "fixed_by_b": 1, "broken_by_b": 1}
    # Frames: the study labels apply to their instances, and s4's instance has its own label.
    assert instance["accuracy"] == {
        "n_labelled": 4,
        "A": 3 / 4,
        "B": 3 / 4,
        "fixed_by_b": 1,
        "broken_by_b": 1,
    }

    labelled = json.loads(_compare(migrated_database_url, "--labelled", "--level", "study", "--json"))
    assert labelled["n"] == 3 and labelled["matrix"]["Normal"]["Normal"] == 0

    # The SQL printed is the SQL run: pasted as it is, it gives the same rows.
    engine = make_engine(migrated_database_url)
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(study["sql"].rstrip(";")).all()
    engine.dispose()
    assert sum(n for *_, n in rows) == 4

    textual = _compare(migrated_database_url, "--level", "study")
    assert "4 studies classified by both A (A) and B (B)" in textual
    assert "agreement 0.500" in textual
    assert "accuracy A 0.667, B 0.667; B fixed 1, broke 1" in textual
    assert "FROM study_results a" in textual


def test_compare_refuses_an_unknown_version(migrated_database_url: str) -> None:
    """A version that is not registered is named, not compared as empty."""
    result = CliRunner().invoke(
        cli, ["models", "compare", "A", "Z"], env={"KIDNEYCT_DATABASE_URL": migrated_database_url}
    )
    assert result.exit_code != 0 and "no model version 'A'" in result.output
