"""Labels and imported images in SQLite and PostgreSQL: data access, `kidneyct label` and `dataset import-folder`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import select, text

from kidneyct.cli import cli
from storage.db.datasets import count_dataset_images_since, list_dataset_images, register_dataset_image
from storage.db.engine import make_engine, make_session_factory
from storage.db.labels import InvalidLabel, add_label, count_labels_since, labelled_instances
from storage.db.tables import DatasetImage, Instance, Label, Series, Study

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _archive_rows(session, study_uid: str, sop_uids: list[str]) -> None:  # type: ignore[no-untyped-def]
    study = Study(study_instance_uid=study_uid, first_received_at=T0, last_received_at=T0)
    series = Series(series_instance_uid=study_uid + ".1", study=study, modality="CT")
    session.add_all([study, series])
    for uid in sop_uids:
        session.add(
            Instance(
                sop_instance_uid=uid,
                series=series,
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                archive_uri=f"file:///archive/{uid}.dcm",
                sha256="0" * 64,
                size_bytes=1,
                number_of_frames=2 if uid.endswith("3") else 1,
                received_at=T0,
                state="processed",
                updated_at=T0,
            )
        )
    session.flush()


def test_instance_label_beats_study_label_and_latest_wins(migrated_database_url: str) -> None:
    """A study label covers its instances; an instance label overrides it; a later label corrects an earlier one."""
    sessions = make_session_factory(make_engine(migrated_database_url))
    with sessions.begin() as session:
        _archive_rows(session, "1.9", ["1.9.1", "1.9.2", "1.9.3"])
        _archive_rows(session, "1.8", ["1.8.1"])  # unlabelled study: not training data
        add_label(session, study_instance_uid="1.9", label="Cyst", source="report", now=T0)
        add_label(session, sop_instance_uid="1.9.2", label="Stone", source="rad", now=T0)
        add_label(
            session, sop_instance_uid="1.9.2", label="Tumor", source="rad", now=T0 + dt.timedelta(hours=1)
        )
        add_label(session, sop_instance_uid="9.9.9", label="Normal", source="rad", now=T0)  # not archived yet
    with sessions() as session:
        result = {
            li.sop_instance_uid: (li.label, li.label_scope, li.number_of_frames)
            for li in labelled_instances(session)
        }
        assert result == {
            "1.9.1": ("Cyst", "study", 1),
            "1.9.2": ("Tumor", "instance", 1),
            "1.9.3": ("Cyst", "study", 2),
        }
        assert count_labels_since(session, since=None) == 4
        assert count_labels_since(session, since=T0) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"label": "Polyp", "sop_instance_uid": "1"}, "unknown class"),
        ({"label": "Cyst"}, "exactly one target"),
        ({"label": "Cyst", "sop_instance_uid": "1", "study_instance_uid": "2"}, "exactly one target"),
    ],
)
def test_invalid_labels_are_refused_before_the_database(
    migrated_database_url: str, kwargs: dict, message: str
) -> None:  # type: ignore[type-arg]
    """Bad labels raise InvalidLabel and write nothing."""
    sessions = make_session_factory(make_engine(migrated_database_url))
    with sessions() as session:
        with pytest.raises(InvalidLabel, match=message):
            add_label(session, source="s", now=T0, **kwargs)
        assert session.scalar(select(Label.id)) is None


def test_check_constraint_also_guards_plain_sql(migrated_database_url: str) -> None:
    """A label inserted with plain SQL that names no class we know is refused by the database itself."""
    engine = make_engine(migrated_database_url)
    with pytest.raises(Exception, match="(?i)check"), engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO labels (sop_instance_uid, label, source, created_at) "
                "VALUES ('1.2', 'Polyp', 'sql', CURRENT_TIMESTAMP)"
            )
        )
    with engine.begin() as conn:  # docs/training.md's example works
        conn.execute(
            text(
                "INSERT INTO labels (study_instance_uid, label, source, annotator, created_at) "
                "VALUES ('1.2.3', 'Stone', 'pathology', 'dr-b', CURRENT_TIMESTAMP)"
            )
        )
    with make_session_factory(engine)() as session:
        assert count_labels_since(session, since=None) == 1


def test_register_dataset_image_is_idempotent_and_tracks_changes(migrated_database_url: str) -> None:
    """The same file twice is one row; a changed file is updated and counts as new."""
    sessions = make_session_factory(make_engine(migrated_database_url))
    with sessions.begin() as session:
        first = register_dataset_image(
            session, path="/d/Cyst/a.jpg", sha256="a" * 64, label="Cyst", source="k", now=T0
        )
        again = register_dataset_image(
            session, path="/d/Cyst/a.jpg", sha256="a" * 64, label="Cyst", source="k", now=T0
        )
    later = T0 + dt.timedelta(days=1)
    with sessions.begin() as session:
        changed = register_dataset_image(
            session, path="/d/Cyst/a.jpg", sha256="b" * 64, label="Cyst", source="k", now=later
        )
    assert (first.created, again.created, again.updated, changed.updated) == (True, False, False, True)
    with sessions() as session:
        rows = list_dataset_images(session)
        assert [(r.path, r.sha256) for r in rows] == [("/d/Cyst/a.jpg", "b" * 64)]
        assert count_dataset_images_since(session, since=T0) == 1


def _write_folder(root: Path) -> None:
    for cls in ("Cyst", "normal", "Stone"):
        (root / cls).mkdir(parents=True)
        for n in (1, 2):
            Image.fromarray(np.full((8, 8), 40 * n, np.uint8)).save(root / cls / f"{cls}- ({n}).jpg")
    (root / "Stone" / "notes.txt").write_text("not an image")
    (root / "Other").mkdir()


def test_cli_import_folder_registers_in_place_and_reimport_changes_nothing(
    migrated_database_url: str, tmp_path: Path
) -> None:
    """`dataset import-folder` registers every class image once, case-insensitively, and reports ignored entries."""
    root = tmp_path / "kaggle"
    _write_folder(root)
    env = {"KIDNEYCT_DATABASE_URL": migrated_database_url, "KIDNEYCT_LOG_FORMAT": "json"}
    runner = CliRunner()
    first = runner.invoke(cli, ["dataset", "import-folder", str(root)], env=env)
    assert first.exit_code == 0, first.output
    assert "6 new, 0 changed, 0 unchanged (Cyst 2, Normal 2, Stone 2)" in first.output
    assert "ignored: Other/ (not a class folder)" in first.output and "notes.txt" in first.output
    second = runner.invoke(cli, ["dataset", "import-folder", str(root)], env=env)
    assert "0 new, 0 changed, 6 unchanged" in second.output
    with make_session_factory(make_engine(migrated_database_url))() as session:
        rows = list(session.scalars(select(DatasetImage)))
    assert len(rows) == 6 and {r.label for r in rows} == {"Cyst", "Normal", "Stone"}
    assert all(Path(r.path).is_absolute() and Path(r.path).is_file() for r in rows)
    assert {r.source for r in rows} == {"folder:kaggle"}


def test_cli_import_folder_without_class_folders_fails_clearly(
    migrated_database_url: str, tmp_path: Path
) -> None:
    """A folder without the Kaggle layout exits non-zero and says which layout it expects."""
    (tmp_path / "images").mkdir()
    result = CliRunner().invoke(
        cli,
        ["dataset", "import-folder", str(tmp_path / "images")],
        env={"KIDNEYCT_DATABASE_URL": migrated_database_url},
    )
    assert result.exit_code != 0 and "Cyst,Normal,Stone,Tumor" in result.output


def test_cli_label_single_and_csv_all_or_nothing(migrated_database_url: str, tmp_path: Path) -> None:
    """`kidneyct label` records one label or a whole CSV; a CSV with one bad row records nothing."""
    env = {"KIDNEYCT_DATABASE_URL": migrated_database_url, "KIDNEYCT_LOG_FORMAT": "json"}
    runner = CliRunner()
    one = runner.invoke(
        cli, ["label", "--study", "1.2.3", "--class", "tumor", "--annotator", "dr-a"], env=env
    )
    assert one.exit_code == 0 and "recorded 1 label(s)" in one.output
    good = tmp_path / "good.csv"
    good.write_text("sop_instance_uid,label\n1.2.3.1,Cyst\n1.2.3.2,Normal\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("sop_instance_uid,label\n1.2.3.3,Cyst\n1.2.3.4,Kidney\n")
    assert (
        runner.invoke(cli, ["label", "--csv", str(good), "--source", "pacs-export"], env=env).exit_code == 0
    )
    failed = runner.invoke(cli, ["label", "--csv", str(bad)], env=env)
    assert failed.exit_code != 0 and "bad.csv line 3" in failed.output
    neither = runner.invoke(cli, ["label", "--class", "Cyst"], env=env)
    assert neither.exit_code != 0 and "exactly one" in neither.output
    with make_session_factory(make_engine(migrated_database_url))() as session:
        rows = list(session.scalars(select(Label).order_by(Label.id)))
    assert [(r.sop_instance_uid, r.study_instance_uid, r.label, r.source, r.annotator) for r in rows] == [
        (None, "1.2.3", "Tumor", "manual", "dr-a"),
        ("1.2.3.1", None, "Cyst", "pacs-export", None),
        ("1.2.3.2", None, "Normal", "pacs-export", None),
    ]
