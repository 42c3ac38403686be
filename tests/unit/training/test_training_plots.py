"""The report's figures: phase lines only between phases, whole-number epochs, captions clear of images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure

from training import plots

CLASSES = ["Cyst", "Normal", "Stone", "Tumor"]


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """The figures the plot functions close, kept for inspection."""
    figures: list[Figure] = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    return figures


def _history(n: int) -> dict[str, Any]:
    ramp = list(np.linspace(1.0, 0.5, n))
    return {"history": {"loss": ramp, "val_loss": ramp, "accuracy": ramp, "val_accuracy": ramp}}


def _vertical_lines(ax: Any) -> list[float]:
    return [
        line.get_xdata()[0]
        for line in ax.get_lines()
        if len(set(line.get_xdata())) == 1 and line.get_ls() == ":"
    ]


@pytest.mark.parametrize(("lengths", "boundaries"), [((3, 2), [3.5]), ((4,), []), ((2, 0), [])])
def test_phase_line_only_between_phases(
    drawn: list[Figure], tmp_path: Path, lengths: tuple[int, ...], boundaries: list[float]
) -> None:
    """Two phases get one line between them; no line after the last phase (or after a skipped one)."""
    phases = {f"phase{i + 1}": _history(n) for i, n in enumerate(lengths)}
    plots.learning_curves(phases, tmp_path / "curves.png", "t")
    (fig,) = drawn
    for ax in fig.axes:
        assert _vertical_lines(ax) == boundaries


def test_epoch_ticks_are_whole_numbers(drawn: list[Figure], tmp_path: Path) -> None:
    """Two epochs are labelled 1 and 2, not 1.0, 1.2, 1.4, ..."""
    plots.learning_curves({"phase1": _history(2)}, tmp_path / "curves.png", "t")
    (fig,) = drawn
    for ax in fig.axes:
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks)


def test_gradcam_captions_do_not_overlap_the_images_above(drawn: list[Figure], tmp_path: Path) -> None:
    """Each second-row caption lies below the bottom of the image above it."""
    images = np.zeros((8, 32, 32, 1), np.float32)
    heat = np.zeros((8, 32, 32), np.float32)
    captions = [f"true {c} / pred {c}" for c in CLASSES * 2]
    plots.gradcam_grid(images, heat, captions, tmp_path / "gradcam.png", "Grad-CAM")
    (fig,) = drawn
    renderer = fig.canvas.get_renderer()
    axes = fig.axes
    for above, below in zip(axes[:4], axes[4:], strict=True):
        image_bottom = above.get_window_extent(renderer).y0
        caption_top = below.title.get_window_extent(renderer).y1
        assert caption_top < image_bottom


def test_confusion_counts_contrast_with_their_cell(drawn: list[Figure], tmp_path: Path) -> None:
    """White on the dark half of the scale, black on the light half."""
    plots.confusion([[6, 1], [0, 2]], ["A", "B"], tmp_path / "c.png", "t", xlabel="predicted (study)")
    (fig,) = drawn
    colours = {text.get_text(): text.get_color() for text in fig.axes[0].texts}
    assert colours == {"6": "white", "1": "black", "0": "black", "2": "black"}
    assert fig.axes[0].get_xlabel() == "predicted (study)"
