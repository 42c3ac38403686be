"""The predict step: one model over a batch of decoded instances, split back per instance.

The active model and the other models (shadows, reprocess targets, `classifier.worker.shadow`)
predict the same way: the frames of every instance in one array, scored in batches, and each
instance's slice of probabilities (and shift scores) handed back with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from classifier.model.serving import ServingModel
from classifier.worker.decoding import DecodedInstance
from classifier.worker.metrics import WorkerMetrics


@dataclass(frozen=True, slots=True)
class Predicted:
    """A decoded instance and its probabilities, one row per frame."""

    instance: DecodedInstance
    probabilities: np.ndarray  # [frames, classes], calibrated
    shift_scores: np.ndarray | None = None  # [frames]; None without a shift detector
    shifted: np.ndarray | None = None  # [frames] bool


def predict(model: ServingModel, decoded: Sequence[DecodedInstance], batch_size: int) -> list[Predicted]:
    """`model`'s predictions for each of `decoded` (their tensors must be of its preprocessing)."""
    if not decoded:
        return []
    scored = model.score(np.concatenate([d.tensors for d in decoded]), batch_size)
    out, start = [], 0
    for d in decoded:
        part = slice(start, start + len(d.tensors))
        out.append(
            Predicted(
                d,
                scored.probabilities[part],
                None if scored.shift_scores is None else scored.shift_scores[part],
                None if scored.shifted is None else scored.shifted[part],
            )
        )
        start = part.stop
    return out


class ActivePredict:
    """The active model's step: predictions, and the frames its shift detector flagged counted."""

    def __init__(self, *, metrics: WorkerMetrics, batch_size: int) -> None:
        self._metrics = metrics
        self._batch_size = batch_size

    def __call__(self, serving: ServingModel, decoded: Sequence[DecodedInstance]) -> list[Predicted]:
        predicted = predict(serving, decoded, self._batch_size)
        shifted = sum(int(p.shifted.sum()) for p in predicted if p.shifted is not None)
        if shifted:
            self._metrics.frames_shifted.inc(shifted)
        return predicted
