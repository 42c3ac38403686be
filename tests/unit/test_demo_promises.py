"""The demo applies the study rule its training tuned, names only files it made, and keeps TensorFlow quiet."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from kidneyct.demo import (
    Steps,
    _abstention_lines,
    _heartbeat,
    _made_files,
    _quiet_tensorflow,
    _say_study_rule,
    _wait_for_results,
)
from kidneyct.settings import Settings


def _run_dir(settings: Settings, version: str, rule: dict[str, object] | None) -> Path:
    run_dir = settings.resolved_train_dir() / version
    run_dir.mkdir(parents=True)
    (run_dir / "report.json").write_text(json.dumps({"grouped": {"study_rule": rule}}))
    return run_dir


def test_the_rule_tuned_on_validation_studies_is_named_and_left_to_the_card(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """(k, t) from the run's report are named; the settings stay unset, so the worker applies the card's rule."""
    settings = Settings(data_dir=tmp_path)
    _run_dir(settings, "v1", {"k": 3, "t": 0.7, "val_studies": 6, "val_accuracy": 0.8})
    _say_study_rule(Steps(total=1), settings, "v1")
    assert "k = 3, t = 0.7" in capsys.readouterr().out
    assert settings.study_rule()[1] is False  # no override: the model card's rule decides


def test_without_a_tuned_rule_the_default_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run with no studies to tune on (or no report) says the worker falls back to k = 2, t = 0.5."""
    settings = Settings(data_dir=tmp_path)
    _run_dir(settings, "v1", None)
    _say_study_rule(Steps(total=1), settings, "v1")
    _say_study_rule(Steps(total=1), settings, "no-such-run")
    assert capsys.readouterr().out.count("k = 2, t = 0.5") == 2


def test_only_files_that_exist_are_promised(tmp_path: Path) -> None:
    """The closing lines name the plots and report figures present, and say why there is no Grad-CAM."""
    plots, run_dir = tmp_path / "plots", tmp_path / "run"
    plots.mkdir()
    run_dir.mkdir()
    (plots / "demo-confusion.png").write_bytes(b"png")
    (run_dir / "learning_curves_grouped.png").write_bytes(b"png")
    lines = _made_files(plots, run_dir)
    assert "demo-confusion.png" in lines[0]
    assert "learning_curves_grouped.png" in lines[1]
    assert "no Grad-CAM picture" in lines[2]
    (run_dir / "gradcam.png").write_bytes(b"png")
    assert not any("Grad-CAM" in line for line in _made_files(plots, run_dir))


def test_tensorflow_is_told_to_be_quiet_and_not_to_probe_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU run: no C++ log lines, no CUDA device, Python-side TensorFlow warnings off; a user's own
    values are kept."""
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    level = logging.getLogger("tensorflow").level
    try:
        _quiet_tensorflow(Settings(device="cpu"))
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "7"  # the user's choice wins
        assert logging.getLogger("tensorflow").level == logging.ERROR
    finally:
        logging.getLogger("tensorflow").setLevel(level)


def test_a_long_step_prints_a_line_while_it_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """The heartbeat says what is still running and for how long, and stops with the block."""
    with _heartbeat(Steps(total=1), "training", every_s=0.05):
        time.sleep(0.3)
    out = capsys.readouterr().out
    assert "still training:" in out
    time.sleep(0.15)
    assert capsys.readouterr().out == ""


def test_when_the_model_abstains_is_said_with_the_validation_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The evidence threshold with its validation coverage and accuracy, the shift rule with the share of
    held-out slices it flags, and the demo-only choices (tiny model, no refit) are printed."""
    settings = Settings(data_dir=tmp_path)
    run_dir = settings.resolved_train_dir() / "v1"
    run_dir.mkdir(parents=True)
    statements = {
        "abstention": {
            "min_evidence": 0.62,
            "target_accuracy": 0.9,
            "reached": True,
            "val_coverage": 0.75,
            "val_accuracy_answered": 0.93,
        },
        "shift": {"flagged_share": {"test": {"images": 288, "flagged": 0.03}}},
    }
    rule = {"k": 2, "t": 0.5, "val_studies": 40}
    (run_dir / "report.json").write_text(
        json.dumps({"grouped": {"study_rule": rule, "statements": statements}})
    )
    _say_study_rule(Steps(total=1), settings, "v1")
    out = capsys.readouterr().out
    assert "below evidence 0.62" in out and "75% of studies, 93% of them right (target 90%)" in out
    assert "test slices flagged: 3%" in out
    assert "tiny model" in out and "no refit" in out


def test_a_target_no_threshold_reached_is_said_plainly() -> None:
    lines = _abstention_lines({"abstention": {"target_accuracy": 0.9, "reached": False}})
    assert lines[0] == "indeterminate always: no evidence threshold reached 90% on validation"
    assert _abstention_lines({}) == []


def test_the_evidence_is_said_as_the_card_defines_it() -> None:
    """The threshold is named with its definition: the deciding slices (with the rule's k) for a new
    card, all slices for a card written before the definition was recorded."""
    abstention = {"min_evidence": 0.7, "target_accuracy": 0.9, "reached": True}
    abstention |= {"val_coverage": 0.8, "val_accuracy_answered": 0.95}
    new = _abstention_lines({"abstention": abstention | {"evidence": "deciding_slices"}}, k=1)
    assert new[-1] == (
        "evidence: the label's mean calibrated probability over the k=1 slices that decided it "
        "(over all slices for Normal)"
    )
    old = _abstention_lines({"abstention": abstention})
    assert old[-1] == "evidence: the label's mean calibrated probability over all slices"


def test_every_step_says_it_is_still_working(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Any numbered step longer than the heartbeat (sending, promoting, waiting for results) prints a line."""
    import kidneyct.demo as demo

    monkeypatch.setattr(demo, "HEARTBEAT_S", 0.05)
    steps = Steps(total=2)
    with steps.step("sending"):
        time.sleep(0.3)
    with steps.step("training", doing="training"):
        time.sleep(0.3)
    out = capsys.readouterr().out
    assert "still on step 1:" in out and "still training:" in out
    assert out.index("[2/2] training") > out.rindex("still on step 1:")  # it stops with its step


def _results_table(tmp_path: Path) -> tuple[sessionmaker[Session], str]:
    """A stand-in for `study_results`: the demo's wait only runs the SQL it is given."""
    engine = create_engine(f"sqlite:///{tmp_path / 'r.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE r (accession TEXT, complete BOOLEAN)"))
        conn.execute(text("INSERT INTO r VALUES ('A1', 0), ('A2', 1)"))
    return sessionmaker(engine), "SELECT accession, complete FROM r ORDER BY accession"


def test_the_results_wait_for_the_sweep_to_mark_studies_complete(tmp_path: Path) -> None:
    """Every slice classified is not the end: the rows come back once the worker's sweep has marked
    each study complete, so the table does not read as unfinished."""
    sessions, sql = _results_table(tmp_path)

    def sweep() -> None:
        time.sleep(0.5)
        with sessions.begin() as session:
            session.execute(text("UPDATE r SET complete = 1"))

    sweeper = threading.Thread(target=sweep)
    sweeper.start()
    rows = _wait_for_results(sessions, sql, {}, 2, [], timeout_s=10, complete_within_s=10)
    sweeper.join()
    assert [bool(r.complete) for r in rows] == [True, True]


def test_a_study_never_marked_complete_does_not_hold_the_demo(tmp_path: Path) -> None:
    """After `complete_within_s` the rows are shown as they are (the COMPLETE column says which)."""
    sessions, sql = _results_table(tmp_path)
    begun = time.monotonic()
    rows = _wait_for_results(sessions, sql, {}, 2, [], timeout_s=10, complete_within_s=0.5)
    assert time.monotonic() - begun < 3
    assert [bool(r.complete) for r in rows] == [False, True]
