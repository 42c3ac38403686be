"""Calibration, the study policy (rule source, abstention) and the shift detector's numbers."""

from __future__ import annotations

import numpy as np
import pytest

from classifier.model.artifact import ModelCard
from classifier.model.calibration import apply_temperature
from classifier.model.serving import load_shift_stats
from classifier.model.shift import SHIFT_FILE, ShiftStats, fit_shift_stats
from classifier.study.policy import (
    REASON_LOW_EVIDENCE,
    REASON_SHIFT,
    SOURCE_CARD,
    SOURCE_DEFAULT,
    SOURCE_SETTINGS,
    PolicySettings,
    StudyPolicy,
    decide,
)
from classifier.study.rule import StudyRule
from classifier.worker.errors import ArtifactError
from common.files import sha256_file


def test_temperature_one_changes_nothing_and_higher_softens_without_changing_the_top_class() -> None:
    """T = 1 is the identity; T > 1 lowers the top probability but keeps it on top; rows sum to 1."""
    p = np.array([[0.9, 0.05, 0.03, 0.02], [0.1, 0.6, 0.2, 0.1]])
    np.testing.assert_allclose(apply_temperature(p, 1.0), p)
    soft = apply_temperature(p, 3.0)
    assert (soft.argmax(axis=1) == p.argmax(axis=1)).all()
    assert (soft.max(axis=1) < p.max(axis=1)).all()
    np.testing.assert_allclose(soft.sum(axis=1), 1.0)
    with pytest.raises(ValueError):
        apply_temperature(p, 0.0)


def _decide(policy: StudyPolicy, *, mean_tumor: float, n_shifted: int = 0) -> tuple[str, str | None]:
    d = decide(
        n_confident={"Tumor": 3},
        mean_probability={"Tumor": mean_tumor, "Normal": 1 - mean_tumor},
        n_shifted=n_shifted,
        n_slices=10,
        policy=policy,
    )
    return d.label, d.indeterminate_reason


def test_a_study_below_the_evidence_threshold_or_with_too_many_shifted_slices_is_indeterminate() -> None:
    """Evidence under min_evidence: low_evidence; more than the shifted share: unlike_training_data (first)."""
    policy = StudyPolicy(StudyRule(2, 0.5), SOURCE_CARD, min_evidence=0.6, max_shifted_fraction=0.25)
    assert _decide(policy, mean_tumor=0.7) == ("Tumor", None)
    assert _decide(policy, mean_tumor=0.5) == ("Tumor", REASON_LOW_EVIDENCE)
    assert _decide(policy, mean_tumor=0.9, n_shifted=3) == ("Tumor", REASON_SHIFT)
    assert _decide(policy, mean_tumor=0.9, n_shifted=2) == ("Tumor", None)


def test_policy_takes_the_cards_rule_unless_the_settings_override_it() -> None:
    """The card's (k, t) by default; the settings' when they set one; the default for an old card."""
    decision = {
        "study_rule": {"k": 3, "t": 0.7},
        "abstention": {"min_evidence": 0.8, "target_accuracy": 0.9},
        "shift": {"threshold": 10.0},
    }
    from_card = PolicySettings().policy(decision)
    assert (from_card.rule, from_card.rule_source, from_card.min_evidence) == (
        StudyRule(3, 0.7),
        SOURCE_CARD,
        0.8,
    )
    assert from_card.max_shifted_fraction == 0.25
    overridden = PolicySettings(fallback=StudyRule(1, 0.4), override=True).policy(decision)
    assert (overridden.rule, overridden.rule_source) == (StudyRule(1, 0.4), SOURCE_SETTINGS)
    old = PolicySettings().policy({})
    assert (old.rule, old.rule_source, old.min_evidence, old.max_shifted_fraction) == (
        StudyRule(2, 0.5),
        SOURCE_DEFAULT,
        0.0,
        1.0,
    )


def test_shift_scores_are_small_for_training_like_features_and_large_for_others(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Features from the training clusters score low; far-away features score far above; save/load keeps scores."""
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 5, size=(4, 16))
    labels = rng.integers(0, 4, size=400)
    train = centres[labels] + rng.normal(0, 1, size=(400, 16))
    stats = fit_shift_stats(train, labels, 4)
    inside = stats.scores(centres[labels[:50]] + rng.normal(0, 1, size=(50, 16)))
    outside = stats.scores(rng.normal(0, 1, size=(50, 16)) * 30)
    assert np.quantile(inside, 0.99) < outside.min()
    stats.save(tmp_path / "s.npz")
    np.testing.assert_allclose(
        ShiftStats.load(tmp_path / "s.npz").scores(train[:5]), stats.scores(train[:5]), rtol=1e-4
    )


def _card(decision: dict) -> ModelCard:  # type: ignore[type-arg]
    return ModelCard(
        version="v",
        classes=["Cyst", "Normal", "Stone", "Tumor"],
        image_size=32,
        window={"center": 40, "width": 400},
        preprocessing={},
        backend="tensorflow",
        keras_version="3",
        manifest_hash=None,
        metrics={},
        weights_file="model.weights.h5",
        weights_sha256="0" * 64,
        decision=decision,
    )


def test_shift_statistics_that_are_missing_or_altered_refuse_the_artifact(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """No detector in the card: none; the card's file missing or with another hash: ArtifactError."""
    assert load_shift_stats(tmp_path, _card({})) is None
    with pytest.raises(ArtifactError, match="missing"):
        load_shift_stats(tmp_path, _card({"shift": {"file": SHIFT_FILE, "threshold": 1.0}}))
    fit_shift_stats(np.eye(4), np.arange(4), 4).save(tmp_path / SHIFT_FILE)
    right = sha256_file(tmp_path / SHIFT_FILE)
    assert load_shift_stats(tmp_path, _card({"shift": {"file": SHIFT_FILE, "sha256": right}})) is not None
    with pytest.raises(ArtifactError, match="sha256"):
        load_shift_stats(tmp_path, _card({"shift": {"file": SHIFT_FILE, "sha256": "0" * 64}}))
