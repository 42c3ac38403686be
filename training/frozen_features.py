"""Pooled features of a frozen backbone, computed once per image and kept.

The features are the served graph's own `avg_pool` output (`classifier.model.network.build_model`,
inference mode, no augmentation; optionally averaged with the horizontally flipped image), so a head
fitted on them predicts exactly what the assembled model predicts. Features are stored by the image's
content (sha1 of its float32 pixels), per extractor (backbone, weights, input size, flip), in memory
for the process and, given a cache folder, in one `.npz` per extractor: a second run, a lever sweep or
a baseline on the same images extracts nothing again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

log = structlog.get_logger(__name__)

POOLED_LAYER = "avg_pool"
EXTRACT_BATCH = 64
CHUNK = 512
FEATURE_CACHE_DIR = "feature-cache"  # under the trainer's run folder (KIDNEYCT_TRAIN_DIR)
_STORES: dict[str, FeatureStore] = {}  # one store per extractor key in this process


@dataclass(frozen=True)
class Extractor:
    backbone: str
    weights: str  # "imagenet" (cached across processes) or "none" (random: never cached on disk)
    image_size: int
    flip: bool = False

    @property
    def key(self) -> str:
        return f"{self.backbone}-{self.weights}-{self.image_size}px-{'flip' if self.flip else 'plain'}"


def image_keys(images: np.ndarray) -> list[str]:
    """A content key per image: the sha1 of its float32 pixels (shape included)."""
    out = []
    for image in np.asarray(images, dtype=np.float32):
        digest = hashlib.sha1(str(image.shape).encode())
        digest.update(np.ascontiguousarray(image).tobytes())
        out.append(digest.hexdigest())
    return out


def pooled_features(
    model: Any, images: np.ndarray, *, flip: bool, batch_size: int = EXTRACT_BATCH
) -> np.ndarray:
    """[N, features] the model's `avg_pool` output for [N, S, S, 1|3] images in [0, 255] (read in
    chunks: three channels of every image at once would triple the images' memory)."""
    import keras

    from training.data import to_three_channels  # Keras: only when features are computed

    pooled = keras.Model(model.inputs, model.get_layer(POOLED_LAYER).output)
    rows = []
    for start in range(0, len(images), CHUNK):
        x = to_three_channels(images[start : start + CHUNK])
        features = np.asarray(pooled.predict(x, batch_size=batch_size, verbose=0), dtype=np.float64)
        if flip:
            flipped = np.asarray(pooled.predict(x[:, :, ::-1, :], batch_size=batch_size, verbose=0))
            features = (features + flipped) / 2.0
        rows.append(features)
    return np.concatenate(rows) if rows else np.zeros((0, int(pooled.output_shape[-1])))


class FeatureStore:
    """Features by image content for one extractor; computes only what it has not seen."""

    def __init__(self, extractor: Extractor, compute: Callable[[np.ndarray], np.ndarray], path: Path | None):
        self.extractor = extractor
        self._compute = compute
        self._path = path
        self._rows: dict[str, np.ndarray] = {}
        if path is not None and path.is_file():
            with np.load(path) as data:
                self._rows = dict(zip(data["keys"].tolist(), data["features"], strict=True))
            log.info("features_cache_loaded", extractor=extractor.key, images=len(self._rows))

    def __call__(self, images: np.ndarray) -> np.ndarray:
        keys = image_keys(images)
        missing: dict[str, int] = {}  # each unseen image once, at its first position
        for i, k in enumerate(keys):
            if k not in self._rows:
                missing.setdefault(k, i)
        if missing:
            log.info("features_extracting", extractor=self.extractor.key, images=len(missing))
            computed = self._compute(np.asarray(images)[list(missing.values())])
            self._rows.update(zip(missing, computed, strict=True))
            self._save()
        return np.stack([self._rows[k] for k in keys]) if keys else np.zeros((0, 0))

    def _save(self) -> None:
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.asarray(list(self._rows)), features=np.stack(list(self._rows.values())))
        tmp.replace(self._path)


def feature_store(extractor: Extractor, build: Callable[[], Any], cache_dir: Path | None) -> FeatureStore:
    """The process's store for `extractor` (created on first use); `build()` makes the graph whose
    `avg_pool` it reads, only when an image is missing. Random weights are never cached on disk, nor
    kept between calls (they differ per seed)."""
    store = _STORES.get(extractor.key)
    if store is not None and extractor.weights != "none":
        return store
    path = (
        cache_dir / f"{extractor.key}.npz" if cache_dir is not None and extractor.weights != "none" else None
    )
    models: list[Any] = []

    def compute(images: np.ndarray) -> np.ndarray:
        if not models:
            models.append(build())
        return pooled_features(models[0], images, flip=extractor.flip)

    store = FeatureStore(extractor, compute, path)
    if extractor.weights != "none":
        _STORES[extractor.key] = store
    return store
