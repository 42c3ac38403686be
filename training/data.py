"""The training input pipeline: a `keras.utils.PyDataset` over in-memory images, with light CT augmentation.

Backend-agnostic: numpy plus keras layers, so the same pipeline feeds TensorFlow on a CPU here and
JAX or PyTorch on a GPU. Images are kept as one channel (float32 in [0, 255], exactly what
`classifier.model.preprocess.to_model_input` produced) and replicated to the model's three channels per
batch, which keeps the memory of a 224x224 set at a third.

Augmentation suits CT slices and how acquisitions differ between scans: small shifts and rotations
and a zoom in or out (another field of view) with a black (air) fill, a different display window
(level shifted, width narrowed or widened about mid-grey, clipped as a real window clips), and a
small global intensity jitter (contrast about the mean, brightness). No flips (left and right kidney
are not interchangeable in a report) and no colour.

Reproducible: the order of an epoch is drawn from (seed, epoch) and a batch's augmentation from
(seed, epoch, batch index), never from a generator's running state, so the same seed gives the same
batches whichever order (or how often) Keras, a prefetching worker or the BatchNorm recalibration asks
for them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np


@dataclass(frozen=True, slots=True)
class AugmentConfig:
    shift: float = 0.05  # fraction of the image size
    rotation: float = 10.0  # degrees, either way
    contrast: float = 0.1  # multiply by 1 +- this, about the image mean
    brightness: float = 10.0  # add +- this many grey levels
    zoom: float = 0.2  # field of view: scale by 1 +- this (keras RandomZoom)
    window_level: float = 20.0  # shift the window level by +- this many grey levels
    window_width: float = 0.3  # scale the window width by 1 +- this (narrower: more contrast, clipped)


def derived_seed(*key: int) -> int:
    """A 31-bit seed that depends only on `key` (e.g. seed, epoch, batch index)."""
    return int(np.random.SeedSequence([int(k) for k in key]).generate_state(1)[0] >> 1)


class Augmenter:
    """Seeded geometric (keras layers) and intensity (numpy) jitter of [N, S, S, 1] batches in [0, 255].

    `key` (e.g. the epoch and batch index) makes a batch's jitter a function of (seed, key) alone.
    """

    def __init__(self, config: AugmentConfig, *, seed: int) -> None:
        self.config = config
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._geometric = keras.Sequential(
            [
                keras.layers.RandomTranslation(
                    config.shift, config.shift, fill_mode="constant", fill_value=0.0, seed=seed
                ),
                keras.layers.RandomRotation(
                    config.rotation / 360.0, fill_mode="constant", fill_value=0.0, seed=seed + 1
                ),
                keras.layers.RandomZoom(
                    (-config.zoom, config.zoom), fill_mode="constant", fill_value=0.0, seed=seed + 2
                ),
            ],
            name="ct_augmentation",
        )

    def _reseed(self, key: tuple[int, ...]) -> None:
        """Restart every random stream (the keras layers' seed states and numpy's) from (seed, key)."""
        for i, layer in enumerate(self._geometric.layers):
            layer.generator.state.assign(np.array([derived_seed(self.seed, *key, i), 0]))
        self._rng = np.random.default_rng([self.seed, *key])

    def __call__(self, batch: np.ndarray, key: tuple[int, ...] | None = None) -> np.ndarray:
        if key is not None:
            self._reseed(key)
        moved = keras.ops.convert_to_numpy(self._geometric(batch, training=True)).astype(np.float32)
        n = len(moved)
        gain = self._rng.uniform(1 - self.config.contrast, 1 + self.config.contrast, (n, 1, 1, 1))
        offset = self._rng.uniform(-self.config.brightness, self.config.brightness, (n, 1, 1, 1))
        mean = moved.mean(axis=(1, 2, 3), keepdims=True)
        jittered = (moved - mean) * gain.astype(np.float32) + mean + offset.astype(np.float32)
        return np.clip(self._rewindow(jittered), 0.0, 255.0)

    def _rewindow(self, batch: np.ndarray) -> np.ndarray:
        """Another display window: level moved by +-L, width scaled by 1 +- w, about mid-grey (clipped by the caller)."""
        n = len(batch)
        level = self._rng.uniform(-self.config.window_level, self.config.window_level, (n, 1, 1, 1))
        width = self._rng.uniform(1 - self.config.window_width, 1 + self.config.window_width, (n, 1, 1, 1))
        return ((batch - 127.5 - level) / width + 127.5).astype(np.float32)


def to_three_channels(images: np.ndarray) -> np.ndarray:
    """[N, S, S, 1] -> [N, S, S, 3], the grey level repeated (what `to_model_input` gives)."""
    return np.repeat(images, 3, axis=-1)


class ImageSequence(keras.utils.PyDataset):
    """Batches of (images, one-hot labels), reshuffled every epoch from a seed; augmented if asked.

    With `class_weight`, batches are (images, one-hot labels, per-image weights): a validation set
    whose weighted accuracy is class-balanced, so that early stopping does not prefer a model that
    predicts the majority class.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        num_classes: int,
        batch_size: int,
        shuffle: bool,
        seed: int,
        augmenter: Augmenter | None = None,
        class_weight: Mapping[int, float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if images.ndim != 4 or images.shape[-1] != 1:
            raise ValueError(f"images must be [N, S, S, 1], got {images.shape}")
        if len(images) != len(labels):
            raise ValueError("images and labels must have the same length")
        if len(images) == 0:
            raise ValueError("no images to iterate over")
        self.images = images
        self.one_hot = np.eye(num_classes, dtype=np.float32)[np.asarray(labels, dtype=np.int64)]
        self.sample_weight = (
            None
            if class_weight is None
            else np.array([class_weight[int(c)] for c in labels], dtype=np.float32)
        )
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augmenter = augmenter
        self.seed = seed
        self.epoch = 0
        self._order = self._epoch_order()

    def __len__(self) -> int:
        return math.ceil(len(self.images) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, ...]:
        rows = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        batch = self.images[rows]
        if self.augmenter is not None:
            batch = self.augmenter(batch, key=(self.epoch, index))
        if self.sample_weight is None:
            return to_three_channels(batch), self.one_hot[rows]
        return to_three_channels(batch), self.one_hot[rows], self.sample_weight[rows]

    def _epoch_order(self) -> np.ndarray:
        n = len(self.images)
        return np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle else np.arange(n)

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._order = self._epoch_order()
