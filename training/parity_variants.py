"""When parity fails: which of the variants the builder knows does the original file match best?

The rebuilt base's feature maps are pooled and passed through the rebuilt head's own weights in
numpy, once per variant (average or max pooling, or Flatten; softmax, sigmoid or no output
activation), and each variant's probabilities are compared with the original's. The message then
names the variant the file matches, so the person importing learns the real difference (max pooling,
a sigmoid output) instead of being invited to force a different model in. `--force` is suggested only
where the difference could honestly be preprocessing: the file's graph holds layers before its base
that transform the pixels (`Architecture.preprocessing_layers`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np

from classifier.model.network import HEAD_LAYERS, get_base, head_of


@dataclass(frozen=True)
class Variant:
    pooling: str
    activation: str
    max_abs_diff: float

    def describe(self) -> str:
        pooled = {"avg": "average pooling", "max": "max pooling", "flatten": "Flatten"}[self.pooling]
        return f"{pooled} with a {self.activation} output (difference {self.max_abs_diff:.2g})"


def _activate(logits: np.ndarray, activation: str) -> np.ndarray:
    if activation == "softmax":
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    return logits


def variant_differences(rebuilt: keras.Model, fed: np.ndarray, expected: np.ndarray) -> list[Variant]:
    """Every known variant's largest difference from `expected` (the original, in our class order), best first.

    `fed` is what the base sees (the inputs after the notebook's normalisation)."""
    maps = np.asarray(get_base(rebuilt).predict(fed, verbose=0), dtype=np.float64)
    w1, b1 = (np.asarray(w, dtype=np.float64) for w in rebuilt.get_layer(HEAD_LAYERS[1]).get_weights())
    w2, b2 = (np.asarray(w, dtype=np.float64) for w in rebuilt.get_layer(HEAD_LAYERS[3]).get_weights())
    pooled = {"avg": maps.mean(axis=(1, 2)), "max": maps.max(axis=(1, 2))}
    if head_of(rebuilt) == "flatten":
        pooled = {"flatten": maps.reshape(len(maps), -1)}
    variants = []
    for pooling, features in pooled.items():
        hidden = np.maximum(features @ w1 + b1, 0.0)
        logits = hidden @ w2 + b2
        for activation in ("softmax", "sigmoid", "linear"):
            probabilities = _activate(logits, activation)
            diff = float(np.max(np.abs(probabilities - expected)))
            variants.append(Variant(pooling, activation, diff))
    return sorted(variants, key=lambda v: v.max_abs_diff)


def failure_message(
    *,
    max_abs_diff: float,
    limit: float,
    inputs: int,
    imported: Variant,
    variants: Sequence[Variant],
    preprocessing_layers: Sequence[str],
) -> str:
    """The refusal: the figure, the variant the file matches best, and what (if anything) to do."""
    head = (
        f"parity failed: the rebuilt model ({imported.describe().split(' (')[0]}) differs from the original "
        f"by up to {max_abs_diff:.3g} (limit {limit:g}) on {inputs} inputs"
    )
    best = variants[0] if variants else None
    if (
        best is not None
        and best.max_abs_diff <= limit
        and (best.pooling, best.activation)
        != (
            imported.pooling,
            imported.activation,
        )
    ):
        return (
            f"{head}; of the variants the builder knows, the file matches {best.describe()}, which the served "
            "model cannot reproduce: this file cannot be imported as it is"
        )
    closest = f" (closest: {best.describe()})" if best is not None else ""
    if preprocessing_layers:
        return (
            f"{head}; no variant of pooling or output activation explains it{closest}. The file's graph "
            f"transforms the pixels before its base ({', '.join(preprocessing_layers)}): if that is the "
            "notebook's preprocessing, say it with --preprocessing; if you are sure the remaining difference "
            "is preprocessing, register it anyway with --force (recorded in the card)"
        )
    return (
        f"{head}; no variant the builder knows explains it{closest}: the file computes something its stored "
        "architecture does not show (a custom layer, another activation inside the head); it cannot be imported"
    )
