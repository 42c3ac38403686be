"""A study's evidence: how sure the model is of the label the study rule chose. The one definition,
used by the worker (and so `study_results.evidence`), the SR's text, training and `kidneyct evaluate`.

Two definitions, named in the model card (`decision.abstention.evidence`), because the card's
`min_evidence` was chosen on validation under one of them and means nothing under the other:

- `deciding_slices` (what training writes now): for an abnormal label, the mean calibrated probability
  of that label over the k slices the rule used (the k highest; the rule needs k slices with p >= t,
  so these are they). A stone seen on 2 of 40 slices is judged by those 2 slices, not diluted by the
  38 where it is simply not in the picture. For Normal, the mean over **all** slices: Normal is a
  statement about every slice (no finding anywhere), so every slice is its evidence, and a study where
  a few slices lean abnormal without reaching the rule gets a lower Normal evidence, which is what
  should send it to indeterminate.
- `all_slices` (cards written before the definition was versioned): the mean over all slices for every
  label. A card without the field keeps it, so registered models do not change answers silently.

The k is the rule's in force: with the settings overriding the card's rule, the evidence follows the
override's k while the card's threshold was chosen for its own k (the SR states both).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from classifier.study.rule import NORMAL, StudyRule

DECIDING_SLICES = "deciding_slices"
ALL_SLICES = "all_slices"
EVIDENCE_DEFINITIONS = (DECIDING_SLICES, ALL_SLICES)
CURRENT = DECIDING_SLICES  # what a training run writes into a new card
LEGACY = ALL_SLICES  # what a card without the field meant


def study_evidence(
    label: str, label_probabilities: Sequence[float], rule: StudyRule, definition: str
) -> float:
    """The evidence for `label` from its calibrated probability on each of the study's slices."""
    if definition not in EVIDENCE_DEFINITIONS:
        raise ValueError(f"unknown evidence definition {definition!r}; known: {EVIDENCE_DEFINITIONS}")
    values = [float(v) for v in label_probabilities]
    if not values:
        return 0.0
    if definition == DECIDING_SLICES and label != NORMAL:
        values = sorted(values, reverse=True)[: rule.min_slices]
    return sum(values) / len(values)


def definition_of(decision: Mapping[str, Any] | None) -> str:
    """The evidence definition of a card's `decision` (`LEGACY` for a card without one); ValueError
    for a definition this version does not know (a card from a newer kidneyct)."""
    abstention = (decision or {}).get("abstention") or {}
    definition = str(abstention.get("evidence", LEGACY))
    if definition not in EVIDENCE_DEFINITIONS:
        raise ValueError(
            f"model card evidence definition {definition!r} unknown; known: {EVIDENCE_DEFINITIONS}"
        )
    return definition


def describe_evidence(definition: str, rule: StudyRule | None = None) -> str:
    """What the evidence number is, for the SR and the reports (with the rule: its k)."""
    if definition == DECIDING_SLICES:
        k = "k" if rule is None else f"k={rule.min_slices}"
        return f"the label's mean calibrated probability over the {k} slices that decided it (over all slices for Normal)"
    return "the label's mean calibrated probability over all slices"
