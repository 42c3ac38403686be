"""`kidneyct demo` from nothing, with tiny settings: every step runs and the answer comes back over SQL."""

from __future__ import annotations

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
            "--dir",
            str(root),
            "--train-studies",
            "8",
            "--test-studies",
            "4",
            "--slices",
            "4",
            "--size",
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
    assert "study-level accuracy against the synthetic truth:" in out
    assert out.count("SYN") >= 4  # one answer row per test study
    assert (root / "plots" / "demo-confusion.png").stat().st_size > 0
    assert (root / "data" / "kidneyct.db").exists()
    assert (root / "synth" / "test" / "truth.csv").exists()
