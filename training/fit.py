"""Two-phase fine-tuning of the classifier's ResNet50: the head first, then the last block at a low rate.

Phase 1 freezes the base and trains the new head; phase 2 unfreezes the base from `unfreeze_from`
on (default the conv5 block; BatchNorm stays frozen, see `classifier.model.network`) and trains at a very low
learning rate so the pre-trained features are adjusted, not destroyed. Both phases use categorical
cross-entropy, class weights for imbalance, early stopping on validation loss (restoring the best
weights) and a best-weights checkpoint per phase.

From random weights (`from_scratch`) two-phase fine-tuning has nothing to protect: phase 1 trains the
whole network, BatchNorm included, at phase 1's rate, and phase 2 is skipped (logged with the reason),
since freezing all but conv5 of a network that was just trained end to end only repeats a subset of
phase 1 at a rate too low to matter. A from-scratch network's weights move fast, so its BatchNorm
moving statistics (an average over past steps, under older weights) lag behind, and inference (and
the validation loss that early stopping watches) would see the wrong statistics; before every
validation and at the end, they are re-estimated under the current weights ("precise BN").
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import structlog

from classifier.model.network import set_trainable_for_phase
from training.progress import DEFAULT_EVERY_S, ProgressLog

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class FitConfig:
    epochs_phase1: int = 5
    epochs_phase2: int = 5
    lr_phase1: float = 1e-3
    lr_phase2: float = 1e-5
    batch_size: int = 32
    patience: int = 3
    unfreeze_from: str = "conv5_"
    verbose: int = 2  # keras: 1 progress bar, 2 one line per epoch
    progress_every_s: float = DEFAULT_EVERY_S  # with verbose 2: a `training_progress` line this often


@dataclass
class PhaseResult:
    phase: int
    epochs_run: int
    history: dict[str, list[float]]
    seconds: float
    images_per_second: float
    checkpoint: str | None


@dataclass
class FitResult:
    phases: list[PhaseResult] = field(default_factory=list)

    def selected_epochs(self) -> int:
        """Epochs (all phases) up to and including the best validation epoch of the last phase: what a refit repeats."""
        total = 0
        for phase in self.phases:
            scores = phase.history.get(f"val_{BALANCED_ACCURACY}")
            total += int(np.argmax(scores)) + 1 if scores and phase is self.phases[-1] else phase.epochs_run
        return total

    def to_json(self) -> dict[str, Any]:
        return {
            f"phase{p.phase}": {
                "epochs_run": p.epochs_run,
                "history": p.history,
                "seconds": p.seconds,
                "images_per_second": p.images_per_second,
            }
            for p in self.phases
        }


def class_weights(labels: Sequence[int] | np.ndarray, num_classes: int) -> dict[int, float]:
    """Balanced weights n / (k * n_c), so every class contributes equally to the loss; absent classes get 1."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    total, present = float(counts.sum()), int((counts > 0).sum())
    return {c: (total / (present * counts[c]) if counts[c] else 1.0) for c in range(num_classes)}


RECALIBRATION_BATCHES = 10
BALANCED_ACCURACY = "balanced_accuracy"


def _all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer, nested models (the ResNet50 base) included."""
    out: list[keras.layers.Layer] = []
    for layer in model.layers:
        out.append(layer)
        if isinstance(layer, keras.Model):
            out.extend(_all_layers(layer))
    return out


def recalibrate_batchnorm(model: keras.Model, batches: Iterable[np.ndarray]) -> int:
    """Set every BatchNorm's moving statistics to the mean of its batch statistics over `batches`.

    Forward passes in training mode with momentum (k-1)/k at the k-th batch give the running average
    (the first batch's momentum is 0: old statistics are forgotten). Plain forward calls, no
    optimizer: any backend. Returns the number of batches used.
    """
    norms = [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    used = 0
    try:
        for used, x in enumerate(batches, start=1):
            for layer in norms:
                layer.momentum = (used - 1) / used
            model(x, training=True)
    finally:
        for layer, momentum in zip(norms, momenta, strict=True):
            layer.momentum = momentum
    return used


class BatchNormRecalibration(keras.callbacks.Callback):
    """Precise BN before each validation pass and at the end of training (after best weights are restored)."""

    def __init__(self, train: keras.utils.PyDataset, batches: int = RECALIBRATION_BATCHES) -> None:
        super().__init__()
        self.train = train
        self.batches = batches

    def _recalibrate(self) -> None:
        n = min(self.batches, len(self.train))  # type: ignore[arg-type]
        recalibrate_batchnorm(self.model, (self.train[i][0] for i in range(n)))

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._recalibrate()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self._recalibrate()


def _callbacks(
    monitor: str, patience: int, checkpoint: Path | None, recalibrate: keras.utils.PyDataset | None
) -> list[keras.callbacks.Callback]:
    mode = "max" if monitor.endswith("accuracy") else "min"
    callbacks: list[keras.callbacks.Callback] = []
    if monitor.startswith("val_"):
        # Without a validation set there is nothing to select on: the refit on train + val trains
        # exactly the epochs the selection run chose (early stopping on training loss would only
        # restore whichever epoch fitted the training set best).
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=monitor, mode=mode, patience=patience, restore_best_weights=True
            )
        )
    if checkpoint is not None and monitor.startswith("val_"):
        callbacks.append(
            keras.callbacks.ModelCheckpoint(
                str(checkpoint), monitor=monitor, mode=mode, save_best_only=True, save_weights_only=True
            )
        )
    if recalibrate is not None:
        # Last, so that at the end it runs after EarlyStopping has restored the best weights.
        callbacks.append(BatchNormRecalibration(recalibrate))
    return callbacks


def _run_phase(
    model: keras.Model,
    phase: int,
    *,
    train: keras.utils.PyDataset,
    val: keras.utils.PyDataset | None,
    epochs: int,
    learning_rate: float,
    weights: dict[int, float],
    config: FitConfig,
    checkpoint_dir: Path | None,
    from_scratch: bool,
) -> PhaseResult:
    set_trainable_for_phase(
        model,
        phase,  # type: ignore[arg-type]
        unfreeze_from=config.unfreeze_from,
        from_scratch=from_scratch,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        # Accuracy under the class-balanced sample weights: the mean recall over classes.
        weighted_metrics=[keras.metrics.CategoricalAccuracy(name=BALANCED_ACCURACY)],
    )
    # The best epoch is the one with the best class-balanced validation accuracy. Cross-entropy is
    # a poor judge here: as a small set is fitted, confident mistakes grow the validation loss while
    # more slices come out right, and its minimum was an early epoch that called most slices Normal.
    monitor = f"val_{BALANCED_ACCURACY}" if val is not None else "loss"
    checkpoint = checkpoint_dir / f"phase{phase}.best.weights.h5" if checkpoint_dir is not None else None
    n_images = len(getattr(train, "images", ())) or 0
    log.info(
        "training_phase_started",
        phase=phase,
        epochs=epochs,
        learning_rate=learning_rate,
        images=n_images,
        from_scratch=from_scratch,
    )
    callbacks = _callbacks(monitor, config.patience, checkpoint, train if from_scratch else None)
    if config.verbose == 2:  # one Keras line per epoch: say how the epoch goes in between
        callbacks.append(
            ProgressLog(phase=phase, batch_size=config.batch_size, every_s=config.progress_every_s)
        )
    started = time.perf_counter()
    history = model.fit(
        train,
        validation_data=val,
        epochs=epochs,
        class_weight=weights,
        callbacks=callbacks,
        verbose=config.verbose,
    )
    seconds = time.perf_counter() - started
    epochs_run = len(history.history.get("loss", []))
    result = PhaseResult(
        phase=phase,
        epochs_run=epochs_run,
        history={k: [float(v) for v in values] for k, values in history.history.items()},
        seconds=seconds,
        # Training images per second of wall time, validation included: what a user waits for.
        images_per_second=(n_images * epochs_run / seconds) if seconds > 0 else 0.0,
        checkpoint=str(checkpoint) if checkpoint is not None and checkpoint.exists() else None,
    )
    log.info(
        "training_phase_finished",
        phase=phase,
        epochs_run=epochs_run,
        seconds=round(seconds, 1),
        images_per_second=round(result.images_per_second, 1),
    )
    return result


def fit_two_phase(
    model: keras.Model,
    *,
    train: keras.utils.PyDataset,
    train_labels: Sequence[int] | np.ndarray,
    val: keras.utils.PyDataset | None,
    num_classes: int,
    config: FitConfig,
    checkpoint_dir: Path | None = None,
    from_scratch: bool = False,
) -> FitResult:
    """Phase 1 (head only), then phase 2 (head + last block) unless `epochs_phase2` is 0.

    With `from_scratch` (a model built with `build_model(from_scratch=True)`), phase 1 trains every
    layer and phase 2 is skipped.
    """
    if checkpoint_dir is not None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
    weights = class_weights(train_labels, num_classes)
    result = FitResult()
    common: dict[str, Any] = {
        "train": train,
        "val": val,
        "weights": weights,
        "config": config,
        "checkpoint_dir": checkpoint_dir,
        "from_scratch": from_scratch,
    }
    if config.epochs_phase1 > 0:
        result.phases.append(
            _run_phase(model, 1, epochs=config.epochs_phase1, learning_rate=config.lr_phase1, **common)
        )
    if config.epochs_phase2 > 0 and from_scratch:
        log.info(
            "training_phase_skipped",
            phase=2,
            reason="from scratch: phase 1 trained every layer; no pre-trained features to fine-tune",
        )
    elif config.epochs_phase2 > 0:
        result.phases.append(
            _run_phase(model, 2, epochs=config.epochs_phase2, learning_rate=config.lr_phase2, **common)
        )
    return result
