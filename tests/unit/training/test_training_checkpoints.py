"""A finished run's checkpoints are removed (unless kept), and the bytes freed are reported."""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from training.run import remove_checkpoints


def test_checkpoints_are_removed_with_the_bytes_freed(tmp_path: Path) -> None:
    """Every file under the folder goes, and the log says how many bytes that freed."""
    folder = tmp_path / "checkpoints"
    (folder / "grouped").mkdir(parents=True)
    (folder / "grouped" / "phase1.best.weights.h5").write_bytes(b"x" * 1000)
    (folder / "grouped-refit").mkdir()
    (folder / "grouped-refit" / "phase1.best.weights.h5").write_bytes(b"y" * 24)
    with capture_logs() as logs:
        assert remove_checkpoints(folder) == 1024
    assert not folder.exists()
    assert [e["bytes_freed"] for e in logs if e["event"] == "training_checkpoints_removed"] == [1024]


def test_no_checkpoint_folder_is_nothing_to_do(tmp_path: Path) -> None:
    """A run that wrote no checkpoint (no validation set) frees nothing and logs nothing."""
    with capture_logs() as logs:
        assert remove_checkpoints(tmp_path / "checkpoints") == 0
    assert logs == []
