"""Confidence intervals by resampling groups (scans, studies), not images.

Slices of one scan are nearly copies of each other, so resampling images would pretend a test set of
300 slices from 10 scans is 300 independent cases and give intervals far too narrow. Every replicate
draws groups with replacement and counts each image of a drawn group once per draw. Paired
differences (candidate minus baseline or active model) use the same draws for both models, which is
what the promotion gate compares.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

N_BOOTSTRAP = 1000
LEVEL = 0.95


def group_draw_weights(groups: Sequence[Hashable], n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, N] how often each item is counted in each replicate (its group's draw count)."""
    _, group_index = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    n_groups = int(group_index.max()) + 1 if len(group_index) else 0
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, max(n_groups, 1), size=(n_boot, n_groups))
    counts = np.stack([np.bincount(row, minlength=n_groups) for row in draws]) if n_groups else draws
    return counts[:, group_index].astype(np.float64)


def _per_class(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Weighted precision, recall and F1 per class for every replicate: arrays [B, k]."""
    tp = np.stack([(weights * ((y_true == c) & (y_pred == c))).sum(axis=1) for c in range(k)], axis=1)
    predicted = np.stack([(weights * (y_pred == c)).sum(axis=1) for c in range(k)], axis=1)
    actual = np.stack([(weights * (y_true == c)).sum(axis=1) for c in range(k)], axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return {"precision": precision, "recall": recall, "f1": f1}


def replicate_scores(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray, weights: np.ndarray, k: int
) -> dict[str, np.ndarray]:
    """Accuracy [B], macro-F1 [B] and per-class precision/recall/F1 [B, k] under each replicate's weights."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    per_class = _per_class(y_true, y_pred, weights, k)
    totals = weights.sum(axis=1)
    correct = (weights * (y_true == y_pred)).sum(axis=1)
    return {
        "accuracy": np.divide(correct, totals, out=np.zeros_like(correct), where=totals > 0),
        "macro_f1": per_class["f1"].mean(axis=1),
        **per_class,
    }


def interval(values: np.ndarray, level: float = LEVEL) -> list[float]:
    """The central percentile interval of bootstrap replicates."""
    tail = (1.0 - level) / 2.0 * 100.0
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100.0 - tail))]


def metric_intervals(
    y_true: Sequence[int] | np.ndarray,
    probabilities: np.ndarray,
    groups: Sequence[Hashable],
    class_names: Sequence[str],
    *,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
) -> dict[str, Any]:
    """95 % group-bootstrap intervals of accuracy, macro-F1 and each class's precision/recall/F1."""
    k = len(class_names)
    weights = group_draw_weights(groups, n_boot, seed)
    scores = replicate_scores(y_true, np.asarray(probabilities).argmax(axis=1), weights, k)
    return {
        "n_boot": n_boot,
        "groups": len({str(g) for g in groups}),
        "accuracy": interval(scores["accuracy"]),
        "macro_f1": interval(scores["macro_f1"]),
        "per_class": {
            name: {m: interval(scores[m][:, c]) for m in ("precision", "recall", "f1")}
            for c, name in enumerate(class_names)
        },
    }


def paired_macro_f1_difference(
    y_true: Sequence[int] | np.ndarray,
    candidate: np.ndarray,
    others: Mapping[str, np.ndarray],
    groups: Sequence[Hashable],
    num_classes: int,
    *,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """For each other model: candidate macro-F1 minus its macro-F1, point value and 95 % interval over the same draws.

    `candidate` and `others` are probabilities [N, classes] (or one-hot predictions).
    """
    weights = group_draw_weights(groups, n_boot, seed)
    ones = np.ones((1, len(np.asarray(y_true))))
    cand_pred = np.asarray(candidate).argmax(axis=1)
    cand = replicate_scores(y_true, cand_pred, weights, num_classes)["macro_f1"]
    cand_point = float(replicate_scores(y_true, cand_pred, ones, num_classes)["macro_f1"][0])
    out: dict[str, dict[str, Any]] = {}
    for name, probs in others.items():
        pred = np.asarray(probs).argmax(axis=1)
        other = replicate_scores(y_true, pred, weights, num_classes)["macro_f1"]
        other_point = float(replicate_scores(y_true, pred, ones, num_classes)["macro_f1"][0])
        out[name] = {
            "candidate_macro_f1": cand_point,
            "other_macro_f1": other_point,
            "difference": cand_point - other_point,
            "interval": interval(cand - other),
        }
    return out
