"""Metrics against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from training.evaluate import classification_metrics, confusion_matrix, roc_auc_binary

CLASSES = ("Cyst", "Normal", "Stone", "Tumor")


def test_confusion_matrix_rows_are_truth() -> None:
    """Entry [t, p] counts items of true class t predicted as p."""
    m = confusion_matrix(np.array([0, 0, 1, 3]), np.array([0, 1, 1, 2]), 4)
    assert m.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 1, 0]]


def test_auc_of_perfect_reversed_and_tied_scores() -> None:
    """AUC is 1 for a perfect ranking, 0 for a reversed one, 0.5 for all ties, None with one class."""
    y = np.array([0, 0, 1, 1], dtype=bool)
    assert roc_auc_binary(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert roc_auc_binary(y, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert roc_auc_binary(y, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5
    assert roc_auc_binary(np.array([1, 1], dtype=bool), np.array([0.1, 0.2])) is None


def test_auc_matches_pairwise_definition() -> None:
    """The rank formula equals the fraction of (positive, negative) pairs ranked right, ties half."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60).astype(bool)
    s = rng.integers(0, 5, 60).astype(float)  # many ties
    pos, neg = s[y], s[~y]
    expected = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
        len(pos) * len(neg)
    )
    assert roc_auc_binary(y, s) == pytest.approx(expected)


def test_classification_metrics_worked_example() -> None:
    """Six items: hand-computed accuracy, per-class P/R/F1, macro-F1 and a tied AUC (6 of 8 pairs)."""
    y_true = [0, 0, 1, 1, 2, 3]
    y_pred = [0, 1, 1, 1, 2, 2]
    probs = np.eye(4)[y_pred] * 0.7 + 0.075
    m = classification_metrics(y_true, probs, CLASSES)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["Cyst"] == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2, "roc_auc": 0.75}
    )
    assert m["per_class"]["Normal"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["Normal"]["f1"] == pytest.approx(0.8)
    assert m["per_class"]["Stone"]["precision"] == pytest.approx(0.5)
    assert m["per_class"]["Tumor"]["f1"] == 0.0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 2 / 3 + 0.0) / 4)
    assert m["confusion_matrix"][3] == [0, 0, 1, 0]


def test_wrong_probability_shape_is_refused() -> None:
    """Probabilities must be (n, classes)."""
    with pytest.raises(ValueError, match="shape"):
        classification_metrics([0, 1], np.zeros((2, 3)), CLASSES)
