"""Classification metrics in plain numpy: accuracy, macro-F1, per-class P/R/F1, one-vs-rest ROC AUC, confusion."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class; columns: predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def roc_auc_binary(is_positive: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve via the rank-sum (Mann-Whitney U) formula, ties averaged; None if undefined."""
    positive = np.asarray(is_positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # Average ranks over runs of equal scores (1-based).
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(scores)]))
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + 1 + end) / 2.0
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _safe_divide(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0


def classification_metrics(
    y_true: Sequence[int] | np.ndarray, probabilities: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """All metrics of one evaluation as a JSON-ready dict.

    Precision, recall and F1 of a class with no predictions or no examples are 0 (as scikit-learn's
    `zero_division=0`); macro-F1 averages over every class. AUC is None where a class is absent.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    k = len(class_names)
    if probabilities.shape != (len(y_true), k):
        raise ValueError(f"probabilities must have shape ({len(y_true)}, {k}), got {probabilities.shape}")
    y_pred = probabilities.argmax(axis=1) if len(y_true) else np.zeros(0, dtype=np.int64)
    matrix = confusion_matrix(y_true, y_pred, k)
    per_class: dict[str, dict[str, Any]] = {}
    f1s = []
    for c, name in enumerate(class_names):
        tp = float(matrix[c, c])
        precision = _safe_divide(tp, float(matrix[:, c].sum()))
        recall = _safe_divide(tp, float(matrix[c, :].sum()))
        f1 = _safe_divide(2 * precision * recall, precision + recall)
        f1s.append(f1)
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": int(matrix[c, :].sum()),
            "roc_auc": roc_auc_binary(y_true == c, probabilities[:, c]) if len(y_true) else None,
        }
    aucs = [v["roc_auc"] for v in per_class.values() if v["roc_auc"] is not None]
    return {
        "n": int(len(y_true)),
        "accuracy": _safe_divide(float(np.trace(matrix)), float(len(y_true))),
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
        "macro_roc_auc": float(np.mean(aucs)) if aucs else None,
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "classes": list(class_names),
    }


CALIBRATION_BINS = 10


def calibration(
    y_true: Sequence[int] | np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS
) -> dict[str, Any]:
    """Expected calibration error of the top-class probability and the reliability diagram's bins.

    ECE = sum over equal-width confidence bins of (bin share) x |accuracy - mean confidence|: 0 when a
    model that says 0.8 is right 80 % of the time; large when it is confident and wrong.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1) if len(y_true) else np.zeros(0)
    correct = (probabilities.argmax(axis=1) == y_true) if len(y_true) else np.zeros(0, bool)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        member = which == b
        count = int(member.sum())
        mean_conf = float(confidence[member].mean()) if count else None
        accuracy = float(correct[member].mean()) if count else None
        if count:
            ece += count / len(y_true) * abs(accuracy - mean_conf)  # type: ignore[operator]
        rows.append(
            {
                "low": float(edges[b]),
                "high": float(edges[b + 1]),
                "count": count,
                "confidence": mean_conf,
                "accuracy": accuracy,
            }
        )
    return {
        "ece": float(ece),
        "mean_confidence": float(confidence.mean()) if len(y_true) else None,
        "bins": rows,
    }


def normal_vs_abnormal(
    y_true: Sequence[int] | np.ndarray,
    probabilities: np.ndarray,
    class_names: Sequence[str],
    normal: str = "Normal",
) -> dict[str, Any] | None:
    """Sensitivity (abnormal slices called any abnormal class) and specificity (normal slices called Normal)."""
    if normal not in class_names:
        return None
    y_true = np.asarray(y_true, dtype=np.int64)
    c = list(class_names).index(normal)
    predicted = np.asarray(probabilities).argmax(axis=1) if len(y_true) else np.zeros(0, np.int64)
    abnormal, called_abnormal = y_true != c, predicted != c
    return {
        "sensitivity": _safe_divide(float((abnormal & called_abnormal).sum()), float(abnormal.sum())),
        "specificity": _safe_divide(float((~abnormal & ~called_abnormal).sum()), float((~abnormal).sum())),
        "abnormal": int(abnormal.sum()),
        "normal": int((~abnormal).sum()),
    }
