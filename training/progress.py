"""Progress within an epoch when no one watches a terminal: a log line every so often with the time left.

On a terminal Keras' own progress bar (`verbose=1`) shows each epoch's batches and its time left.
Elsewhere (a scheduler, `nohup`, a service) Keras prints one line per epoch, and an epoch of a
224 px ResNet50 on a CPU is many minutes of silence; this callback logs `training_progress` at
most every `every_s` seconds instead: the batch, the images per second and the estimated seconds
left in the epoch and in the phase (at most: early stopping may end the phase sooner). The clock
is injected, so the decision is tested without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import keras
import structlog

log = structlog.get_logger(__name__)

DEFAULT_EVERY_S = 30.0


def seconds_left(
    *, done: int, steps: int, epoch_elapsed: float, epochs_left_after: int, epoch_seconds: float | None
) -> tuple[float, float]:
    """(seconds left in this epoch, seconds left in the phase) from the pace so far.

    The epoch's rest goes at this epoch's pace per batch; each later epoch takes as long as the
    finished ones did on average (validation included) or, before any finished, this epoch's pace.
    """
    per_batch = epoch_elapsed / done if done else 0.0
    epoch_left = per_batch * (steps - done)
    per_epoch = epoch_seconds if epoch_seconds is not None else per_batch * steps
    return epoch_left, epoch_left + per_epoch * epochs_left_after


class ProgressLog(keras.callbacks.Callback):
    """Log `training_progress` at most every `every_s` seconds during `fit`."""

    def __init__(
        self,
        *,
        phase: int,
        batch_size: int,
        every_s: float = DEFAULT_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.phase = phase
        self.batch_size = batch_size
        self.every_s = every_s
        self.clock = clock
        self._epoch = 0
        self._epoch_started = 0.0
        self._last = 0.0
        self._finished_epochs: list[float] = []

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._last = self.clock()
        self._finished_epochs = []

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = epoch
        self._epoch_started = self.clock()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._finished_epochs.append(self.clock() - self._epoch_started)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        now = self.clock()
        if now - self._last < self.every_s:
            return
        self._last = now
        steps = int(self.params.get("steps") or 0)
        epochs = int(self.params.get("epochs") or 1)
        elapsed = now - self._epoch_started
        done = batch + 1
        finished = self._finished_epochs
        epoch_left, phase_left = seconds_left(
            done=done,
            steps=steps,
            epoch_elapsed=elapsed,
            epochs_left_after=epochs - self._epoch - 1,
            epoch_seconds=sum(finished) / len(finished) if finished else None,
        )
        log.info(
            "training_progress",
            phase=self.phase,
            epoch=self._epoch + 1,
            epochs=epochs,
            batch=done,
            batches=steps,
            loss=round(float((logs or {}).get("loss", float("nan"))), 4),
            images_per_second=round(done * self.batch_size / elapsed, 1) if elapsed > 0 else None,
            seconds_left_epoch=round(epoch_left),
            seconds_left_phase_at_most=round(phase_left),
        )
