"""Temperature fitting, the abstention threshold and risk-coverage on synthetic probabilities."""

from __future__ import annotations

import numpy as np

from classifier.model.calibration import apply_temperature
from classifier.study.evidence import ALL_SLICES, DECIDING_SLICES
from classifier.study.rule import StudyRule
from training.calibrate import fit_temperature, negative_log_likelihood
from training.evaluate import calibration
from training.statements import choose_min_evidence, held_out_statements, risk_coverage, scans_of

CLASSES = ["Cyst", "Normal", "Stone", "Tumor"]


def _overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of a model right 60 % of the time that says ~0.97."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=n)
    predicted = np.where(rng.random(n) < 0.6, labels, rng.integers(0, 4, size=n))
    logits = rng.normal(0, 0.3, size=(n, 4))
    logits[np.arange(n), predicted] += 4.0
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True), labels


def test_temperature_fitted_on_validation_lowers_nll_and_ece_on_new_data() -> None:
    """An over-confident model gets T > 1; on other data of the same kind NLL and ECE both drop."""
    val_p, val_y = _overconfident(400, 1)
    test_p, test_y = _overconfident(400, 2)
    t = fit_temperature(val_p, val_y)
    assert t > 1.5
    after = apply_temperature(test_p, t)
    assert negative_log_likelihood(after, test_y) < negative_log_likelihood(test_p, test_y)
    assert calibration(test_y, after)["ece"] < 0.5 * calibration(test_y, test_p)["ece"]
    assert fit_temperature(np.zeros((0, 4)), []) == 1.0


def test_threshold_reaches_the_target_accuracy_among_answered_scans_or_says_it_cannot() -> None:
    """Scans whose evidence is high are right; the chosen threshold answers only them."""
    # 6 scans of 3 slices: the first 4 confident and right, the last 2 unsure and wrong.
    groups = [f"s{i}" for i in range(6) for _ in range(3)]
    labels = np.array([1] * 18)
    p = np.zeros((18, 4))
    p[:12, 1] = 0.95
    p[:12, 0] = 0.05
    p[12:, 1] = 0.3
    p[12:, 0] = 0.7
    scans = scans_of(p, groups, labels, CLASSES, StudyRule(2, 0.5))
    chosen = choose_min_evidence(scans, 0.9)
    assert chosen["reached"] and chosen["val_coverage"] == 4 / 6 and chosen["val_accuracy_answered"] == 1.0
    impossible = choose_min_evidence(
        scans_of(p[12:], groups[12:], labels[12:], CLASSES, StudyRule(2, 0.5)), 0.9
    )
    assert not impossible["reached"] and impossible["min_evidence"] > 1.0


def test_risk_coverage_has_coverage_falling_and_intervals_per_threshold() -> None:
    """Higher thresholds answer fewer; each row gives coverage and accuracy among answered with intervals."""
    confidence = np.array([0.95, 0.9, 0.7, 0.55, 0.4, 0.3])
    correct = np.array([True, True, True, False, False, False])
    rows = risk_coverage(confidence, correct, ["a", "a", "b", "b", "c", "c"], (0.0, 0.5, 0.8))
    assert [r["coverage"] for r in rows] == [1.0, 4 / 6, 2 / 6]
    assert [r["accuracy_answered"] for r in rows] == [0.5, 0.75, 1.0]
    assert all(r["coverage_interval"] is not None for r in rows)


def test_held_out_statements_give_slice_and_scan_levels_and_both_eces() -> None:
    """One held-out set: calibration before/after, slice and scan metrics with intervals, the chosen threshold's coverage."""
    p, y = _overconfident(120, 3)
    groups = [f"g{i // 10}" for i in range(120)]
    out = held_out_statements(
        p, y, groups, CLASSES, temperature=2.0, rule=StudyRule(2, 0.5), min_evidence=0.5
    )
    assert out["calibration_after"]["ece"] != out["calibration_before"]["ece"]
    assert out["slice"]["metrics"]["n"] == 120 and out["scan"]["metrics"]["n"] == 12
    assert out["scan"]["intervals"]["groups"] == 12
    assert {r["threshold"] for r in out["scan"]["risk_coverage"]} >= {0.0, 0.5, 0.9}
    assert out["scan"]["at_chosen_threshold"]["scans"] == 12


def test_a_scan_whose_few_slices_show_a_stone_is_a_stone_scan() -> None:
    """The scan's truth is the most urgent class any slice shows: 3 stone slices of 12 make a Stone scan,
    and the rule's Stone answer on it is right."""
    labels = np.array([2] * 3 + [1] * 9)  # Stone on 3 slices, Normal on the rest
    p = np.tile([0.02, 0.94, 0.02, 0.02], (12, 1))
    p[:3] = [0.02, 0.03, 0.93, 0.02]
    scans = scans_of(p, ["s"] * 12, labels, CLASSES, StudyRule(2, 0.5))
    assert CLASSES[int(scans.truth[0])] == "Stone" and CLASSES[int(scans.answer[0])] == "Stone"


def test_scan_evidence_and_the_chosen_threshold_use_the_slices_that_decided_and_say_so() -> None:
    """Validation: two focal-stone scans (sure on 2 of 6 slices) and one plain Normal scan. Under the
    current definition their evidence is the 2 deciding slices' mean, the threshold is chosen on it, and
    the card's abstention names the definition; under the old one the same scans score ~0.3."""
    stone = [0.95, 0.9, 0.02, 0.02, 0.02, 0.02]
    p = np.zeros((18, 4))
    p[:12, 2] = stone * 2
    p[:12, 1] = 1 - p[:12, 2] - 0.02
    p[:12, 0] = 0.02
    p[12:, 1] = 0.9
    p[12:, 0] = 0.1
    labels = np.array(([2, 2, 1, 1, 1, 1] * 2) + [1] * 6)
    groups = ["a"] * 6 + ["b"] * 6 + ["c"] * 6
    scans = scans_of(p, groups, labels, CLASSES, StudyRule(2, 0.5))
    np.testing.assert_allclose(scans.evidence, [0.925, 0.925, 0.9])
    chosen = choose_min_evidence(scans, 0.9)
    assert chosen["evidence"] == DECIDING_SLICES and chosen["val_coverage"] == 1.0
    old = scans_of(p, groups, labels, CLASSES, StudyRule(2, 0.5), ALL_SLICES)
    assert old.evidence[0] < 0.35 and choose_min_evidence(old, 0.9)["evidence"] == ALL_SLICES
    out = held_out_statements(
        p, labels, groups, CLASSES, temperature=1.0, rule=StudyRule(2, 0.5), min_evidence=0.9
    )
    assert out["scan"]["at_chosen_threshold"]["answered"] == 3
    assert out["scan"]["at_chosen_threshold"]["evidence"] == DECIDING_SLICES
