"""Progress within an epoch off a terminal: a log line every so often with the time left."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from training.progress import ProgressLog, seconds_left


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_time_left_follows_the_pace_then_the_finished_epochs() -> None:
    """Half an epoch in 50 s: 50 s left in it; two more epochs at the measured 120 s each add 240 s."""
    assert seconds_left(done=5, steps=10, epoch_elapsed=50, epochs_left_after=2, epoch_seconds=None) == (
        50.0,
        250.0,
    )
    assert seconds_left(done=5, steps=10, epoch_elapsed=50, epochs_left_after=2, epoch_seconds=120) == (
        50.0,
        290.0,
    )


def test_a_line_at_most_every_interval_with_the_batch_and_time_left() -> None:
    """Batches 10 s apart with a 30 s interval: one line per three batches, saying where it is and how long is left."""
    clock = Clock()
    progress = ProgressLog(phase=1, batch_size=32, every_s=30.0, clock=clock)
    progress.set_params({"steps": 12, "epochs": 2})
    with capture_logs() as logs:
        progress.on_train_begin()
        progress.on_epoch_begin(0)
        for batch in range(12):
            clock.now += 10.0
            progress.on_train_batch_end(batch, {"loss": 1.25})
    lines = [e for e in logs if e["event"] == "training_progress"]
    assert [e["batch"] for e in lines] == [3, 6, 9, 12]
    first = lines[0]
    assert first["phase"] == 1 and first["epoch"] == 1 and first["epochs"] == 2 and first["batches"] == 12
    assert first["seconds_left_epoch"] == 90  # 9 batches at 10 s
    assert first["seconds_left_phase_at_most"] == 90 + 120  # and one more epoch of 12 batches
    assert first["images_per_second"] == pytest.approx(3.2)
    assert first["loss"] == 1.25


def test_the_second_epoch_uses_the_first_ones_measured_length() -> None:
    """After an epoch that took 200 s (validation included), the remaining epochs are estimated at 200 s each."""
    clock = Clock()
    progress = ProgressLog(phase=2, batch_size=8, every_s=5.0, clock=clock)
    progress.set_params({"steps": 4, "epochs": 3})
    progress.on_train_begin()
    progress.on_epoch_begin(0)
    clock.now = 200.0
    progress.on_epoch_end(0)
    progress.on_epoch_begin(1)
    with capture_logs() as logs:
        clock.now = 210.0
        progress.on_train_batch_end(0, {})
    (line,) = logs
    assert line["epoch"] == 2 and line["seconds_left_epoch"] == 30
    assert line["seconds_left_phase_at_most"] == 30 + 200
