"""Group-bootstrap intervals and paired differences (`training.bootstrap`)."""

from __future__ import annotations

import numpy as np

from training.bootstrap import group_draw_weights, metric_intervals, paired_macro_f1_difference

CLASSES = ["Cyst", "Normal", "Stone", "Tumor"]


def test_draws_resample_whole_groups() -> None:
    """Every image of a group is counted as often as its group is drawn; each replicate draws n_groups groups."""
    groups = ["a", "a", "a", "b", "c", "c"]
    weights = group_draw_weights(groups, n_boot=200, seed=1)
    assert weights.shape == (200, 6)
    assert np.all(weights[:, 0] == weights[:, 1]) and np.all(weights[:, 1] == weights[:, 2])
    assert np.all(weights[:, 4] == weights[:, 5])
    # 3 groups drawn per replicate: the weights of one representative per group sum to 3.
    assert np.all(weights[:, [0, 3, 4]].sum(axis=1) == 3)


def test_interval_is_wider_when_the_images_come_from_few_scans() -> None:
    """The same 80 predictions give a wider macro-F1 interval from 4 scans than from 80 independent images."""
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(4), 20)
    # Each scan of 20 slices is either all right or all wrong: what near-identical slices do.
    right = np.repeat([True, True, False, True], 20)
    pred = np.where(right, truth, (truth + 1) % 4)
    probs = np.eye(4)[pred] + rng.uniform(0, 0.01, (80, 4))
    by_scan = metric_intervals(truth, probs, np.repeat(np.arange(4), 20), CLASSES, n_boot=500)
    by_image = metric_intervals(truth, probs, np.arange(80), CLASSES, n_boot=500)
    width = lambda ci: ci["accuracy"][1] - ci["accuracy"][0]  # noqa: E731
    assert width(by_scan) > 2 * width(by_image)
    assert by_scan["groups"] == 4 and by_image["groups"] == 80


def test_paired_difference_sees_a_clear_winner_and_a_tie() -> None:
    """A perfect model against a chance one: interval above zero; a model against itself: exactly zero."""
    truth = np.repeat(np.arange(4), 30)
    groups = np.repeat(np.arange(24), 5)
    perfect = np.eye(4)[truth]
    constant = np.tile([1.0, 0, 0, 0], (120, 1))
    out = paired_macro_f1_difference(
        truth, perfect, {"const": constant, "self": perfect}, groups, 4, n_boot=300
    )
    assert out["const"]["interval"][0] > 0.5 and out["const"]["candidate_macro_f1"] == 1.0
    assert out["self"]["interval"] == [0.0, 0.0] and out["self"]["difference"] == 0.0
