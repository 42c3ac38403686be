"""What a study result says, and which rule decided it: the study rule, then abstention.

A model version carries in its card (`ModelCard.decision`) the study rule (k, t) its training chose on
validation scans, the evidence a study needs before it is answered (chosen on validation for a target
accuracy among answered studies), and the share of slices unlike the training data above which the
model says nothing. The settings may override the rule (`KIDNEYCT_STUDY_ABNORMAL_MIN_*`); the policy
says where its rule came from, and the SR repeats it.

A study is **indeterminate** (its label withheld) when
- more than `max_shifted_fraction` of its slices were flagged by the shift detector
  (`REASON_SHIFT`: the images are unlike what the model was trained and validated on), or
- its evidence (`classifier.study.evidence`: the mean calibrated probability of the label the rule
  chose, over the slices that decided it, or over all slices for cards before that definition) is
  below `min_evidence` (`REASON_LOW_EVIDENCE`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from classifier.study.evidence import LEGACY, definition_of, describe_evidence, study_evidence
from classifier.study.rule import DEFAULT_STUDY_RULE, StudyRule, study_label

REASON_SHIFT = "unlike_training_data"
REASON_LOW_EVIDENCE = "low_evidence"
REASONS = (REASON_SHIFT, REASON_LOW_EVIDENCE)
REASON_TEXT = {
    REASON_SHIFT: "too many slices unlike the images this model was trained and validated on",
    REASON_LOW_EVIDENCE: "the calibrated evidence does not reach the threshold validated for this model",
}
SOURCE_CARD = "model card (tuned on validation scans)"
SOURCE_SETTINGS = "settings (override)"
SOURCE_DEFAULT = "default (the model card has none)"
DEFAULT_MAX_SHIFTED_FRACTION = 0.25


@dataclass(frozen=True, slots=True)
class StudyPolicy:
    rule: StudyRule
    rule_source: str
    min_evidence: float = 0.0  # 0: every study is answered
    target_accuracy: float | None = None  # what min_evidence was chosen for, on validation
    max_shifted_fraction: float = 1.0  # 1: shift never withholds a label
    # What `min_evidence` was chosen on (`classifier.study.evidence`); without a card's word, the old one.
    evidence: str = LEGACY


@dataclass(frozen=True, slots=True)
class StudyDecision:
    label: str  # the rule's label (kept even when withheld, for audits)
    indeterminate_reason: str | None
    evidence: float

    @property
    def answered(self) -> bool:
        return self.indeterminate_reason is None


def decide(
    *,
    slice_probabilities: Mapping[str, Sequence[float]],
    n_shifted: int,
    policy: StudyPolicy,
) -> StudyDecision:
    """The rule's label, its evidence and, when the study is not answered, why, from each class's
    calibrated probability on each of the study's slices (a class left out: never confident)."""
    rule = policy.rule
    n_confident = {c: sum(1 for v in p if v >= rule.min_probability) for c, p in slice_probabilities.items()}
    label = study_label(n_confident, rule)
    evidence = study_evidence(label, slice_probabilities.get(label, ()), rule, policy.evidence)
    n_slices = max((len(p) for p in slice_probabilities.values()), default=0)
    reason = None
    if n_slices and n_shifted / n_slices > policy.max_shifted_fraction:
        reason = REASON_SHIFT
    elif evidence < policy.min_evidence:
        reason = REASON_LOW_EVIDENCE
    return StudyDecision(label=label, indeterminate_reason=reason, evidence=evidence)


def policy_of(
    decision: Mapping[str, Any] | None,
    *,
    fallback: StudyRule,
    override: bool = False,
    max_shifted_fraction: float = DEFAULT_MAX_SHIFTED_FRACTION,
) -> StudyPolicy:
    """The policy of a model version from its card's `decision` (None or {} for cards before it).

    `override`: the settings gave the rule, and `fallback` is it. Without a shift detector in the card
    the shifted share is never computed, so `max_shifted_fraction` has nothing to act on. ValueError
    for an evidence definition this version does not know.
    """
    decision = decision or {}
    card_rule = decision.get("study_rule")
    if override:
        rule, source = fallback, SOURCE_SETTINGS
    elif card_rule:
        rule, source = StudyRule(int(card_rule["k"]), float(card_rule["t"])), SOURCE_CARD
    else:
        rule, source = fallback, SOURCE_DEFAULT
    abstention = decision.get("abstention") or {}
    return StudyPolicy(
        rule=rule,
        rule_source=source,
        min_evidence=float(abstention.get("min_evidence", 0.0)),
        target_accuracy=abstention.get("target_accuracy"),
        max_shifted_fraction=max_shifted_fraction if decision.get("shift") else 1.0,
        evidence=definition_of(decision),
    )


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """What the settings say: the rule when a card has none (or, with `override`, always) and the
    shifted share that withholds a label."""

    fallback: StudyRule = DEFAULT_STUDY_RULE
    override: bool = False
    max_shifted_fraction: float = DEFAULT_MAX_SHIFTED_FRACTION

    def policy(self, decision: Mapping[str, Any] | None) -> StudyPolicy:
        return policy_of(
            decision,
            fallback=self.fallback,
            override=self.override,
            max_shifted_fraction=self.max_shifted_fraction,
        )


def describe_rule(policy: StudyPolicy) -> str:
    rule = policy.rule
    return (
        f"an abnormal class labels the study when k={rule.min_slices} slices have calibrated p >= "
        f"t={rule.min_probability} (Tumor > Stone > Cyst), else Normal; rule from {policy.rule_source}"
    )


def describe_abstention(policy: StudyPolicy) -> str:
    shifted = f"more than {policy.max_shifted_fraction:.0%} of slices are unlike the training data"
    target = policy.target_accuracy
    if policy.min_evidence > 1.0:  # no threshold reached the target on validation
        return (
            f"indeterminate always: on validation no evidence threshold reached accuracy {target or 0:.2f} "
            f"among answered studies; also when {shifted}"
        )
    chosen = f" (chosen on validation scans for accuracy {target:.2f} among answered)" if target else ""
    evidence = describe_evidence(policy.evidence, policy.rule)
    return (
        f"indeterminate when the evidence, {evidence}, is < {policy.min_evidence:.3f}{chosen}, or {shifted}"
    )
