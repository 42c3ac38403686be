"""A learning-free yardstick: 1-nearest-neighbour on raw 32x32 pixels.

If this scores nearly as well as the network on a split, the split rewards matching near-duplicates,
not recognising disease; the report prints it beside both splits' results for that reason.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

THUMB = 32


def thumbnails(images: np.ndarray) -> np.ndarray:
    """[N, S, S, 1] in [0, 255] -> [N, THUMB*THUMB] standardised rows (zero mean, unit norm)."""
    rows = np.stack(
        [
            np.asarray(
                Image.fromarray(img[..., 0], mode="F").resize((THUMB, THUMB), Image.Resampling.BILINEAR)
            )
            for img in images.astype(np.float32)
        ]
    ).reshape(len(images), -1)
    rows = rows - rows.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)


def nearest_neighbour_predict(train: np.ndarray, train_labels: np.ndarray, test: np.ndarray) -> np.ndarray:
    """The label of each test image's most correlated training image."""
    if len(train) == 0:
        raise ValueError("no training images")
    similarity = thumbnails(test) @ thumbnails(train).T
    return np.asarray(train_labels)[similarity.argmax(axis=1)]
