"""The `frozen-features` recipe: a pretrained backbone kept frozen, and a deterministic head on its features.

Features are the served graph's `avg_pool` output, computed once per image (`training.frozen_features`).
The head is class-balanced multinomial logistic regression with L2 (`training.linear_head`), fitted
full-batch from zero: the same data give the same weights bit for bit. Its L2 strength is chosen on
the validation scans (macro-F1, ties to the stronger penalty), then the head is refitted on train + val
with it. The served model is ONE Keras graph, `build_model`'s own (base -> avg_pool -> dense_512 ->
dropout -> predictions), with the head written into its Dense layers:

- `dense_512` units 0..k-1 hold the logits, k..2k-1 their negatives (ReLU(x) - ReLU(-x) = x), and
  `predictions` adds the first and subtracts the second: the logits pass through exactly;
- the remaining units hold the leading principal components of the standardised features, again as
  a +-pair, with zero weight in `predictions`: they change no prediction and give the shift detector
  (Mahalanobis on `dense_512`) the backbone's feature geometry rather than four logits.

So calibration, the study rule, abstention, shift detection, Grad-CAM, the artifact and the worker
treat it like any other model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from training.evaluate import classification_metrics
from training.frozen_features import Extractor, FeatureStore, feature_store
from training.linear_head import DEFAULT_STEPS, LinearHead, fit_linear_head

log = structlog.get_logger(__name__)

FROZEN = "frozen-features"
FINE_TUNE = "fine-tune"
RECIPES = (FINE_TUNE, FROZEN)
L2_GRID: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0)
DENSE_UNITS = 512


@dataclass(frozen=True)
class FrozenConfig:
    l2_grid: tuple[float, ...] = L2_GRID
    balanced: bool = True
    flip: bool = False  # average each image's features with its mirror image's (not served: graph unchanged)
    label_smoothing: float = 0.0
    steps: int = DEFAULT_STEPS
    cache_dir: Path | None = None


@dataclass
class FrozenFit:
    """What the recipe gives the run: the served model, how to predict any manifest item with it
    and with the selection head (fitted on train only), and the choice it made."""

    model: Any
    served: Callable[[np.ndarray], np.ndarray]  # manifest indices -> served probabilities
    selection: Callable[[np.ndarray], np.ndarray]  # manifest indices -> selection-head probabilities
    dense_features: Callable[[np.ndarray], np.ndarray]  # images -> `dense_512` activations (shift)
    head: dict[str, Any] = field(default_factory=dict)


def choose_l2(
    features: np.ndarray,
    labels: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    classes: list[str],
    config: FrozenConfig,
) -> tuple[float, list[dict[str, float]]]:
    """The grid's L2 with the best validation macro-F1 (ties: the stronger penalty), and every score."""
    scores = []
    for l2 in config.l2_grid:
        head = _fit(features[train_idx], labels[train_idx], len(classes), l2, config)
        metrics = classification_metrics(labels[val_idx], head.probabilities(features[val_idx]), classes)
        scores.append({"l2": l2, "val_macro_f1": metrics["macro_f1"], "val_accuracy": metrics["accuracy"]})
    best = max(scores, key=lambda s: (round(s["val_macro_f1"], 12), s["l2"]))
    return float(best["l2"]), scores


def _fit(x: np.ndarray, y: np.ndarray, k: int, l2: float, config: FrozenConfig) -> LinearHead:
    return fit_linear_head(
        x, y, k, l2=l2, balanced=config.balanced, label_smoothing=config.label_smoothing, steps=config.steps
    )


def principal_axes(standardised: np.ndarray, count: int) -> np.ndarray:
    """[features, count] the leading principal axes (sign fixed: largest entry positive)."""
    centred = standardised - standardised.mean(axis=0)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    axes = vectors[:, ::-1][:, :count]
    signs = np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(axes.shape[1])])
    return axes * np.where(signs == 0, 1.0, signs)


def head_layers(
    head: LinearHead, train_features: np.ndarray, units: int = DENSE_UNITS
) -> dict[str, list[np.ndarray]]:
    """`dense_512` and `predictions` weights that compute `head`'s logits exactly (see the module)."""
    kernel, bias = head.raw_affine()
    features, k = kernel.shape
    components = min((units - 2 * k) // 2, features)
    axes = principal_axes(head.standardise(train_features), components) / head.scale[:, None]
    offset = -(head.mean @ axes)
    dense_kernel = np.zeros((features, units))
    dense_bias = np.zeros(units)
    dense_kernel[:, :k], dense_bias[:k] = kernel, bias
    dense_kernel[:, k : 2 * k], dense_bias[k : 2 * k] = -kernel, -bias
    start = 2 * k
    dense_kernel[:, start : start + components], dense_bias[start : start + components] = axes, offset
    end = start + 2 * components
    dense_kernel[:, start + components : end], dense_bias[start + components : end] = -axes, -offset
    out_kernel = np.zeros((units, k))
    out_kernel[:k] = np.eye(k)
    out_kernel[k : 2 * k] = -np.eye(k)
    return {
        "dense_512": [dense_kernel.astype(np.float32), dense_bias.astype(np.float32)],
        "predictions": [out_kernel.astype(np.float32), np.zeros(k, np.float32)],
    }


def assemble(model: Any, layers: dict[str, list[np.ndarray]]) -> None:
    """Write the head's weights into the served graph."""
    for name, weights in layers.items():
        model.get_layer(name).set_weights(weights)


def dense_activations(features: np.ndarray, layers: dict[str, list[np.ndarray]]) -> np.ndarray:
    kernel, bias = (np.asarray(w, np.float64) for w in layers["dense_512"])
    return np.maximum(features @ kernel + bias, 0.0)


def fit_frozen(
    *,
    images: np.ndarray,
    labels: np.ndarray,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    classes: list[str],
    build: Callable[[], Any],
    extractor: Extractor,
    config: FrozenConfig,
    refit: bool,
) -> FrozenFit:
    """Extract (or read) every image's features, choose L2 on val, fit the served head, assemble the model."""
    model = build()
    store: FeatureStore = feature_store(extractor, lambda: model, config.cache_dir)
    started = time.perf_counter()
    features = store(images)
    extract_seconds = time.perf_counter() - started
    k = len(classes)
    if len(val_idx):
        l2, scores = choose_l2(features, labels, train_idx, val_idx, classes, config)
    else:
        l2, scores = max(config.l2_grid), []
    started = time.perf_counter()
    selection_head = _fit(features[train_idx], labels[train_idx], k, l2, config)
    served_idx = np.sort(np.concatenate([train_idx, val_idx])) if refit and len(val_idx) else train_idx
    served_head = (
        selection_head
        if served_idx is train_idx
        else _fit(features[served_idx], labels[served_idx], k, l2, config)
    )
    layers = head_layers(served_head, features[served_idx])
    assemble(model, layers)
    fit_seconds = time.perf_counter() - started
    log.info("frozen_head_fitted", l2=l2, train=len(served_idx), extract_seconds=round(extract_seconds, 1))
    head = {
        "recipe": FROZEN,
        "extractor": extractor.key,
        "head": "multinomial logistic regression, L2, full batch from zero",
        "balanced": config.balanced,
        "label_smoothing": config.label_smoothing,
        "steps": config.steps,
        "l2": l2,
        "l2_scores": scores,
        "chosen_on": "validation scans (macro-F1)" if scores else "no validation set: the grid's largest",
        "refitted_on": "train + val" if served_head is not selection_head else "train",
        "feature_seconds": extract_seconds,
        "head_seconds": fit_seconds,
    }
    return FrozenFit(
        model=model,
        served=lambda idx: served_head.probabilities(features[idx]),
        selection=lambda idx: selection_head.probabilities(features[idx]),
        dense_features=lambda x: dense_activations(store(x), layers),
        head=head,
    )
