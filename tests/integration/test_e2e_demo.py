"""`kidneyct demo` from nothing, with tiny settings: every step runs and the answer comes back over SQL."""

from __future__ import annotations

import csv
import re
import sqlite3
from pathlib import Path

import pytest
from e2e_kit import kidneyct_env, run_kidneyct


@pytest.mark.slow
def test_demo_runs_the_whole_loop_and_prints_sql_answer_and_accuracy(tmp_path: Path) -> None:
    """The demo creates its folder, trains, promotes, classifies the test studies and reports accuracy and plots."""
    root = tmp_path / "demo"
    env = kidneyct_env(tmp_path / "unused", log_level="error")
    del env["KIDNEYCT_DATA_DIR"]  # the demo's own folder holds its data
    result = run_kidneyct(
        [
            "demo",
            "--out",
            str(root),
            "--train-studies",
            "8",
            "--test-studies",
            "4",
            "--slices",
            "4",
            "--slice-size",
            "64",
            "--image-size",
            "32",
            "--epochs",
            "1",
        ],
        env,
    )
    out = result.stdout
    for step in range(1, 8):
        assert f"[{step}/7]" in out
    assert "FROM study_results" in out
    _assert_the_answer_is_the_databases_and_the_accuracy_is_honest(root, out)
    assert (root / "plots" / "demo-confusion.png").stat().st_size > 0
    assert (root / "data" / "kidneyct.db").exists()
    assert (root / "synth" / "test" / "truth.csv").exists()


def _assert_the_answer_is_the_databases_and_the_accuracy_is_honest(root: Path, out: str) -> None:
    """Each printed row's TRUE class is the synthetic truth, its PREDICTED class is what
    `study_results` holds for that accession, and the printed accuracy is the share of rows where
    they agree: a demo that reported more than its model earned (or the wrong studies) fails here."""
    with (root / "synth" / "test" / "truth.csv").open(newline="") as f:
        truth = {row["accession_number"]: row["study_class"] for row in csv.DictReader(f)}
    with sqlite3.connect(root / "data" / "kidneyct.db") as db:
        stored = dict(db.execute("SELECT accession_number, label FROM study_results"))
    rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0] in truth]
    assert {r[0] for r in rows} == set(truth)  # one answer row per test study
    for accession, true_class, predicted, *_ in rows:
        assert true_class == truth[accession]
        assert predicted == (stored[accession] or "indeterm.")  # label NULL: the study is indeterminate
    correct = sum(r[1] == r[2] for r in rows)
    match = re.search(r"study-level accuracy against the synthetic truth: (\d+)/(\d+) = ", out)
    assert match is not None
    assert (int(match[1]), int(match[2])) == (correct, len(rows))
