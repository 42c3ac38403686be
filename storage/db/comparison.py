"""The SQL of `kidneyct models compare`: two model versions side by side, over the public views.

Plain SQL that runs as it is on PostgreSQL and SQLite (the command prints it, so an analyst can paste
it): one row per (label under A, label under B, ground truth) with its count, over the studies (or
the instance frames) both versions classified. The ground truth is the latest label of the target
(`labels`, a later label corrects an earlier one; for a frame, its instance's label, else its
study's, as the trainer takes them). `labelled_only` keeps only what has a label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy.orm import Session

Level = Literal["study", "instance"]


@dataclass(frozen=True, slots=True)
class ComparisonRow:
    label_a: str
    label_b: str
    truth: str | None
    n: int


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


INDETERMINATE = "indeterminate"


def _latest_label(where: str) -> str:
    return f"(SELECT l.id FROM labels l WHERE {where} ORDER BY l.created_at DESC, l.id DESC LIMIT 1)"


def comparison_sql(*, level: Level, version_a: str, version_b: str, labelled_only: bool) -> str:
    """The query; versions are inlined as quoted literals so the text runs as printed."""
    join = "JOIN" if labelled_only else "LEFT JOIN"
    a, b = _literal(version_a), _literal(version_b)
    if level == "study":
        return (
            "SELECT a.label AS label_a, b.label AS label_b, t.label AS truth, COUNT(*) AS n\n"
            "FROM study_results a\n"
            "JOIN study_results b ON b.study_instance_uid = a.study_instance_uid\n"
            f"{join} labels t ON t.id = {_latest_label('l.study_instance_uid = a.study_instance_uid')}\n"
            f"WHERE a.model_version = {a} AND b.model_version = {b}\n"
            "GROUP BY a.label, b.label, t.label\n"
            "ORDER BY a.label, b.label, t.label;"
        )
    truth_filter = "\n  AND COALESCE(ti.label, ts.label) IS NOT NULL" if labelled_only else ""
    return (
        "SELECT a.label AS label_a, b.label AS label_b, COALESCE(ti.label, ts.label) AS truth, COUNT(*) AS n\n"
        "FROM instance_results a\n"
        "JOIN instance_results b ON b.sop_instance_uid = a.sop_instance_uid AND b.frame = a.frame\n"
        f"LEFT JOIN labels ti ON ti.id = {_latest_label('l.sop_instance_uid = a.sop_instance_uid')}\n"
        f"LEFT JOIN labels ts ON ts.id = {_latest_label('l.study_instance_uid = a.study_instance_uid')}\n"
        f"WHERE a.model_version = {a} AND b.model_version = {b}{truth_filter}\n"
        "GROUP BY a.label, b.label, COALESCE(ti.label, ts.label)\n"
        "ORDER BY a.label, b.label, COALESCE(ti.label, ts.label);"
    )


def run_comparison(session: Session, sql: str) -> list[ComparisonRow]:
    """Run the printed text itself (driver-level: no bind-parameter parsing of the literals)."""
    result = session.connection().exec_driver_sql(sql.rstrip(";"))
    # A NULL study label is an indeterminate result (migration 0014): named, not printed as "None".
    return [
        ComparisonRow(_named(a), _named(b), None if t is None else str(t), int(n)) for a, b, t, n in result
    ]


def _named(label: object) -> str:
    return INDETERMINATE if label is None else str(label)
