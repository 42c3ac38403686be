"""The served model's shift detector, fitted at the end of training and saved beside its weights.

Statistics (class means, shrunk shared precision of the penultimate features; `classifier.model.shift`) come
from the training images; the threshold is the `quantile` of the validation images' scores. The
served model was refitted on train + val, so its validation scores are lower than those of unseen
scans of the same kind: the threshold is on the strict side, and the report gives the share of each
held-out set that it flags beside noise and synthetic non-CT images, which it should flag.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from classifier.model.serving import feature_scorer
from classifier.model.shift import FEATURE_LAYER, SHIFT_FILE, ShiftStats, fit_shift_stats
from common.files import sha256_file
from training.data import to_three_channels

NOISE_IMAGES = 16


def foreign_images(size: int, n: int = NOISE_IMAGES, seed: int = 0) -> dict[str, np.ndarray]:
    """Images that are not kidney CT, [n, size, size, 1] in [0, 255]: uniform noise, and a bright
    disc on black (a phantom, nothing like an abdomen)."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0.0, 255.0, size=(n, size, size, 1)).astype(np.float32)
    yy, xx = np.mgrid[:size, :size]
    discs = []
    for i in range(n):
        r = size * (0.15 + 0.3 * i / max(n - 1, 1))
        discs.append(((yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= r * r) * 255.0)
    return {"uniform noise": noise, "disc phantom": np.stack(discs)[..., None].astype(np.float32)}


class FeatureReader:
    def __init__(self, model: Any, batch_size: int) -> None:
        self._scorer = feature_scorer(model)
        self._batch_size = batch_size

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if len(images) == 0:
            return np.zeros((0, int(self._scorer.outputs[1].shape[-1])))
        _, features = self._scorer.predict(to_three_channels(images), batch_size=self._batch_size, verbose=0)
        return np.asarray(features, dtype=np.float64)


def fit_shift_detector(
    model: Any,
    *,
    train: tuple[np.ndarray, np.ndarray],
    val: np.ndarray,
    held_out: dict[str, np.ndarray],
    num_classes: int,
    quantile: float,
    directory: Path,
    batch_size: int,
    features: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the card's `decision["shift"]`, the report's figures); writes `SHIFT_FILE` into `directory`.

    `features` reads the model's `FEATURE_LAYER` activations another way (the frozen-features recipe:
    from cached backbone features, the same numbers without a second pass over every image)."""
    features = features or FeatureReader(model, batch_size)
    stats: ShiftStats = fit_shift_stats(features(train[0]), train[1], num_classes)
    reference = val if len(val) else train[0]
    threshold = float(np.quantile(stats.scores(features(reference)), quantile))
    directory.mkdir(parents=True, exist_ok=True)
    stats.save(directory / SHIFT_FILE)
    size = int(train[0].shape[1])
    sets = held_out | foreign_images(size)
    flagged = {
        name: {"images": len(images), "flagged": float((stats.scores(features(images)) > threshold).mean())}
        for name, images in sets.items()
        if len(images)
    }
    decision = {
        "file": SHIFT_FILE,
        "sha256": sha256_file(directory / SHIFT_FILE),
        "threshold": threshold,
        "quantile": quantile,
        "fitted_on": "training images" + ("; threshold from validation images" if len(val) else ""),
        "score": f"class-conditional Mahalanobis distance on `{FEATURE_LAYER}` features",
    }
    return decision, {"threshold": threshold, "quantile": quantile, "flagged_share": flagged}
