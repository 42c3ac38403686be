"""The study label rule and the completeness decision."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from classifier.study.rule import StudyRule, is_complete, study_label

RULE = StudyRule(min_slices=2, min_probability=0.5)
T = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_no_abnormal_class_with_k_slices_is_normal() -> None:
    """One confident stone slice is not enough when k=2."""
    assert study_label({"Cyst": 1, "Stone": 1, "Tumor": 0, "Normal": 30}, RULE) == "Normal"


def test_abnormal_class_with_k_slices_labels_the_study() -> None:
    """Two confident cyst slices make a Cyst study, whatever the many normal slices."""
    assert study_label({"Cyst": 2, "Normal": 300}, RULE) == "Cyst"


def test_most_urgent_qualifying_class_wins() -> None:
    """Tumour beats stone beats cyst, even when the cyst has more slices."""
    assert study_label({"Cyst": 50, "Stone": 3, "Tumor": 2}, RULE) == "Tumor"
    assert study_label({"Cyst": 50, "Stone": 3, "Tumor": 1}, RULE) == "Stone"


@given(st.dictionaries(st.sampled_from(["Cyst", "Stone", "Tumor", "Normal"]), st.integers(0, 10)))
def test_label_is_normal_exactly_when_no_abnormal_class_qualifies(counts: dict[str, int]) -> None:
    """Property: Normal iff every abnormal class has fewer than k confident slices."""
    qualifies = any(counts.get(c, 0) >= RULE.min_slices for c in ("Cyst", "Stone", "Tumor"))
    assert (study_label(counts, RULE) == "Normal") is not qualifies


def test_invalid_rule_is_refused() -> None:
    """k below 1 or t outside [0,1] are configuration errors."""
    with pytest.raises(ValueError):
        StudyRule(min_slices=0, min_probability=0.5)
    with pytest.raises(ValueError):
        StudyRule(min_slices=1, min_probability=1.5)


def _complete(*, received_ago: float, updated_ago: float, pending: int = 0) -> bool:
    return is_complete(
        last_received_at=T - dt.timedelta(seconds=received_ago),
        last_updated_at=T - dt.timedelta(seconds=updated_ago),
        pending_instances=pending,
        now=T,
        stable_age_s=60,
    )


def test_study_is_complete_after_the_stable_age() -> None:
    """Nothing arrived and nothing was recomputed for 60 s: complete."""
    assert _complete(received_ago=60, updated_ago=61)


def test_recent_arrival_or_recompute_keeps_it_open() -> None:
    """An arrival or a recompute within the stable age keeps the study open."""
    assert not _complete(received_ago=59, updated_ago=120)
    assert not _complete(received_ago=120, updated_ago=10)


def test_pending_instance_keeps_it_open() -> None:
    """An instance not yet processed keeps the study open however old."""
    assert not _complete(received_ago=600, updated_ago=600, pending=1)
