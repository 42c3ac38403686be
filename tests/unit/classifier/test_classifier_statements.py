"""Calibration, the study policy (rule source, abstention) and the shift detector's numbers."""

from __future__ import annotations

import numpy as np
import pytest

from classifier.model.artifact import CARD_FILE, ModelCard, load_artifact
from classifier.model.calibration import apply_temperature
from classifier.model.serving import load_shift_stats
from classifier.model.shift import SHIFT_FILE, ShiftStats, fit_shift_stats
from classifier.study.evidence import ALL_SLICES, DECIDING_SLICES, study_evidence
from classifier.study.policy import (
    REASON_LOW_EVIDENCE,
    REASON_SHIFT,
    SOURCE_CARD,
    SOURCE_DEFAULT,
    SOURCE_SETTINGS,
    PolicySettings,
    StudyPolicy,
    decide,
    describe_abstention,
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


def _decide(policy: StudyPolicy, *, tumor: float, n_shifted: int = 0) -> tuple[str, str | None]:
    """Ten slices, every one with Tumor probability `tumor`."""
    d = decide(
        slice_probabilities={"Tumor": [tumor] * 10, "Normal": [1 - tumor] * 10},
        n_shifted=n_shifted,
        policy=policy,
    )
    return d.label, d.indeterminate_reason


def test_a_study_below_the_evidence_threshold_or_with_too_many_shifted_slices_is_indeterminate() -> None:
    """Evidence under min_evidence: low_evidence; more than the shifted share: unlike_training_data (first)."""
    policy = StudyPolicy(StudyRule(2, 0.5), SOURCE_CARD, min_evidence=0.6, max_shifted_fraction=0.25)
    assert _decide(policy, tumor=0.7) == ("Tumor", None)
    assert _decide(policy, tumor=0.55) == ("Tumor", REASON_LOW_EVIDENCE)
    assert _decide(policy, tumor=0.9, n_shifted=3) == ("Tumor", REASON_SHIFT)
    assert _decide(policy, tumor=0.9, n_shifted=2) == ("Tumor", None)


def _focal_stone() -> dict[str, list[float]]:
    """Six slices: a stone the model is sure of on two (0.95, 0.9), plainly normal on four."""
    stone = [0.95, 0.9, 0.02, 0.02, 0.02, 0.02]
    return {"Stone": stone, "Normal": [1 - v - 0.02 for v in stone], "Cyst": [0.01] * 6, "Tumor": [0.01] * 6}


def test_a_focal_stone_sure_on_two_of_six_slices_is_decided_on_the_slices_that_decided_it() -> None:
    """k = 2, t = 0.5, min_evidence 0.8: the evidence is the mean over the 2 deciding slices (0.925), so the
    study is a Stone; over all six slices (0.32, what an old card means) it would be indeterminate."""
    new = StudyPolicy(StudyRule(2, 0.5), SOURCE_CARD, min_evidence=0.8, evidence=DECIDING_SLICES)
    d = decide(slice_probabilities=_focal_stone(), n_shifted=0, policy=new)
    assert (d.label, d.indeterminate_reason) == ("Stone", None)
    assert d.evidence == pytest.approx(0.925)
    old = StudyPolicy(StudyRule(2, 0.5), SOURCE_CARD, min_evidence=0.8, evidence=ALL_SLICES)
    d = decide(slice_probabilities=_focal_stone(), n_shifted=0, policy=old)
    assert (d.label, d.indeterminate_reason) == ("Stone", REASON_LOW_EVIDENCE)
    assert d.evidence == pytest.approx((0.95 + 0.9 + 4 * 0.02) / 6)


def test_normal_evidence_is_over_every_slice_so_a_study_leaning_abnormal_is_not_a_sure_normal() -> None:
    """Normal is about every slice: with k = 3 the two stone slices do not make a Stone, and they pull the
    Normal evidence (mean over all six) below the threshold: indeterminate, not a confident Normal."""
    policy = StudyPolicy(StudyRule(3, 0.5), SOURCE_CARD, min_evidence=0.8, evidence=DECIDING_SLICES)
    d = decide(slice_probabilities=_focal_stone(), n_shifted=0, policy=policy)
    assert (d.label, d.indeterminate_reason) == ("Normal", REASON_LOW_EVIDENCE)
    assert d.evidence == pytest.approx(sum(_focal_stone()["Normal"]) / 6)
    assert study_evidence("Normal", [0.9, 0.8], StudyRule(1, 0.5), DECIDING_SLICES) == pytest.approx(0.85)


def test_a_card_keeps_the_evidence_definition_it_was_chosen_on_and_an_unknown_one_is_refused() -> None:
    """No `evidence` in the card (registered before it existed): all slices, as then; a new card's field
    is taken; a definition this version does not know is refused, by the policy and at artifact load."""
    old = {"study_rule": {"k": 2, "t": 0.5}, "abstention": {"min_evidence": 0.8, "target_accuracy": 0.9}}
    assert PolicySettings().policy(old).evidence == ALL_SLICES
    assert PolicySettings().policy({}).evidence == ALL_SLICES
    new = {**old, "abstention": {**old["abstention"], "evidence": DECIDING_SLICES}}
    assert PolicySettings().policy(new).evidence == DECIDING_SLICES
    # The old card answers the focal stone as it always did: indeterminate.
    d = decide(slice_probabilities=_focal_stone(), n_shifted=0, policy=PolicySettings().policy(old))
    assert d.indeterminate_reason == REASON_LOW_EVIDENCE
    d = decide(slice_probabilities=_focal_stone(), n_shifted=0, policy=PolicySettings().policy(new))
    assert d.indeterminate_reason is None
    newer = {**old, "abstention": {**old["abstention"], "evidence": "median_of_something"}}
    with pytest.raises(ValueError, match="median_of_something"):
        PolicySettings().policy(newer)


def test_the_abstention_text_says_which_evidence_the_threshold_applies_to() -> None:
    """The SR's KCT-ABSTENTION text names the definition (and k) its threshold was chosen on."""
    new = StudyPolicy(
        StudyRule(3, 0.7), SOURCE_CARD, min_evidence=0.8, target_accuracy=0.9, evidence=DECIDING_SLICES
    )
    assert "over the k=3 slices that decided it (over all slices for Normal)" in describe_abstention(new)
    old = StudyPolicy(StudyRule(3, 0.7), SOURCE_CARD, min_evidence=0.8, evidence=ALL_SLICES)
    assert "over all slices" in describe_abstention(old) and "decided" not in describe_abstention(old)


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


def test_an_artifact_whose_card_names_an_unknown_evidence_definition_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Refused at load (ArtifactError), before the worker would serve it with a misread threshold."""
    card = _card({"abstention": {"min_evidence": 0.7, "evidence": "median_of_something"}})
    (tmp_path / CARD_FILE).write_text(card.to_json())
    with pytest.raises(ArtifactError, match="evidence definition 'median_of_something'"):
        load_artifact(tmp_path)
