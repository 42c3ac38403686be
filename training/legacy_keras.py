"""The one place that touches tf-keras (Keras 2), to load a Keras 2 file for the parity check.

tf-keras runs only on TensorFlow and is an optional extra (`pip install 'kidneyct[legacy]'`); it is
imported here, lazily, and nowhere else. Everything else in kidneyct is Keras 3 and backend-agnostic.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

Predict = Callable[[np.ndarray], np.ndarray]


class LegacyKerasUnavailable(Exception):
    """tf-keras is not installed (or cannot start); the message says how to get it."""


def load_keras2_model(path: Path) -> tuple[Predict, str]:
    """A Keras 2 model file loaded by tf-keras, as a predict function, and the loader's name."""
    try:
        import tf_keras
    except ImportError as exc:
        raise LegacyKerasUnavailable(
            "tf-keras is not installed (pip install 'kidneyct[legacy]'), so a Keras 2 file cannot be loaded"
        ) from exc
    model = tf_keras.models.load_model(path, compile=False)

    def predict(x: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(x, verbose=0), dtype=np.float64)

    return predict, f"tf-keras {tf_keras.__version__}"
