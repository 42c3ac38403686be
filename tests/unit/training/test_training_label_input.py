"""Label rows from the command line and CSV files: validated, normalised, with errors that name the row."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.label_input import LabelInputError, make_row, read_csv


def test_make_row_normalises_the_class_and_needs_one_target() -> None:
    """'tumor' becomes 'Tumor'; an instance UID alone is a valid target."""
    row = make_row(label=" tumor ", source="rad", annotator="", instance="1.2.3", study=None, where="cli")
    assert (row.label, row.sop_instance_uid, row.study_instance_uid, row.annotator) == (
        "Tumor",
        "1.2.3",
        None,
        None,
    )


@pytest.mark.parametrize(
    ("label", "instance", "study", "message"),
    [
        ("Kidney", "1.2", None, "unknown class"),
        ("Cyst", None, None, "exactly one"),
        ("Cyst", "1.2", "1.3", "exactly one"),
        ("Cyst", "1." * 40, None, "longer than 64"),
    ],
)
def test_bad_rows_are_refused(label: str, instance: str | None, study: str | None, message: str) -> None:
    """Unknown classes, no or two targets, and over-long UIDs raise LabelInputError."""
    with pytest.raises(LabelInputError, match=message):
        make_row(label=label, source="s", annotator=None, instance=instance, study=study, where="cli")


def test_csv_rows_with_defaults_and_overrides(tmp_path: Path) -> None:
    """Each row gets the default source/annotator unless it gives its own."""
    path = tmp_path / "labels.csv"
    path.write_text(
        "sop_instance_uid,study_instance_uid,label,source,annotator\n"
        "1.2.3,,Cyst,,\n"
        ",1.2.4,stone,pathology,dr-b\n"
    )
    rows = read_csv(path, default_source="csv", default_annotator="dr-a")
    assert [(r.label, r.source, r.annotator, r.sop_instance_uid, r.study_instance_uid) for r in rows] == [
        ("Cyst", "csv", "dr-a", "1.2.3", None),
        ("Stone", "pathology", "dr-b", None, "1.2.4"),
    ]


def test_csv_error_names_the_line(tmp_path: Path) -> None:
    """A bad row fails the whole file with its line number."""
    path = tmp_path / "labels.csv"
    path.write_text("sop_instance_uid,label\n1.2.3,Cyst\n1.2.4,Polyp\n")
    with pytest.raises(LabelInputError, match="labels.csv line 3: unknown class 'Polyp'"):
        read_csv(path, default_source="csv", default_annotator=None)


def test_csv_without_the_needed_columns_is_refused(tmp_path: Path) -> None:
    """A header without `label` or any UID column is refused."""
    path = tmp_path / "labels.csv"
    path.write_text("uid,class\n1.2.3,Cyst\n")
    with pytest.raises(LabelInputError, match="header needs"):
        read_csv(path, default_source="csv", default_annotator=None)
