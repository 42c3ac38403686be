"""Parity: does the rebuilt model predict what the original file predicts?

The original is loaded the way its writer would load it (Keras 3 for files Keras 3 wrote, tf-keras
for Keras 2 files, when that optional extra is installed) and fed the same inputs after the
notebook's normalisation, which the rebuilt model does in its graph. The largest absolute
difference of the class probabilities goes into the model card; a weights-only file has no graph
to load, and a missing tf-keras leaves the check undone: the card says so.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from classifier.model.network import normalize_pixels
from training.legacy_keras import LegacyKerasUnavailable, Predict, load_keras2_model

PARITY_INPUTS = 16
PARITY_LIMIT = 1e-4


@dataclass(frozen=True)
class Parity:
    checked: bool
    max_abs_diff: float | None
    inputs: int
    loader: str | None
    note: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parity_inputs(image_size: int, n: int = PARITY_INPUTS, seed: int = 0) -> np.ndarray:
    """`n` fixed inputs in [0, 255]: gray images (as the workers feed) and a few colour ones."""
    rng = np.random.default_rng(seed)
    gray = rng.uniform(0.0, 255.0, (n, image_size, image_size, 1))
    x = np.repeat(gray, 3, axis=-1)
    x[: n // 4] = rng.uniform(0.0, 255.0, (n // 4, image_size, image_size, 3))
    return x.astype(np.float32)


def load_original(path: Path, writer: str, keras_version: str | None) -> tuple[Predict, str]:
    """The original model as its writer's Keras loads it; raises what loading raises."""
    if writer in ("keras2-h5",) or (keras_version or "").startswith("2"):
        return load_keras2_model(path)
    model = keras.saving.load_model(path, compile=False)

    def predict(x: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(x, verbose=0), dtype=np.float64)

    return predict, f"keras {keras.__version__}"


@dataclass(frozen=True)
class Compared:
    """What parity compared: the base's inputs and the original's outputs in our class order."""

    fed: np.ndarray
    expected: np.ndarray


def check_parity(
    path: Path,
    *,
    writer: str,
    keras_version: str | None,
    full_model: bool,
    rebuilt: keras.Model,
    normalization: str,
    columns: list[int],
    compared: list[Compared] | None = None,
) -> Parity:
    """Compare `rebuilt` with the original on `PARITY_INPUTS` inputs; `columns` reorders its classes.

    `compared`, when given, receives the inputs and the original's outputs (to diagnose a failure)."""
    if not full_model:
        return Parity(
            False, None, 0, None, "not checked: a weights-only file has no graph to load the original from"
        )
    try:
        original, loader = load_original(path, writer, keras_version)
    except LegacyKerasUnavailable as exc:
        return Parity(False, None, 0, None, f"not checked: {exc}")
    except Exception as exc:  # noqa: BLE001 - whatever the old graph's loader raises is the note
        return Parity(
            False,
            None,
            0,
            None,
            f"not checked: the original could not be loaded ({type(exc).__name__}: {exc})",
        )
    x = parity_inputs(int(rebuilt.input_shape[1]))
    fed = keras.ops.convert_to_numpy(normalize_pixels(keras.ops.convert_to_tensor(x), normalization))
    expected = original(np.asarray(fed, dtype=np.float32))[:, columns]
    if compared is not None:
        compared.append(Compared(np.asarray(fed, dtype=np.float32), expected))
    actual = np.asarray(rebuilt.predict(x, verbose=0), dtype=np.float64)
    diff = float(np.max(np.abs(expected - actual)))
    return Parity(True, diff, len(x), loader, f"max |p_original - p_rebuilt| over {len(x)} inputs")
