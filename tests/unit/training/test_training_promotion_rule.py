"""The promotion rule and the schedule rule, as pure functions."""

from __future__ import annotations

import datetime as dt

from training.promotion import decide_promotion
from training.registry import make_version, training_due


def test_first_model_is_promoted() -> None:
    """With no active model any candidate is promoted."""
    decision = decide_promotion(candidate_f1=0.1, active_f1=None, force=False)
    assert decision.promote and not decision.forced


def test_equal_or_better_is_promoted_worse_is_refused() -> None:
    """Macro-F1 at least the active one's promotes; lower is refused."""
    assert decide_promotion(candidate_f1=0.80, active_f1=0.80, force=False).promote
    assert decide_promotion(candidate_f1=0.81, active_f1=0.80, force=False).promote
    refused = decide_promotion(candidate_f1=0.79, active_f1=0.80, force=False)
    assert not refused.promote and refused.reason.startswith("refused")


def test_force_overrides_and_says_so() -> None:
    """--force promotes a worse candidate and the reason records it."""
    forced = decide_promotion(candidate_f1=0.5, active_f1=0.8, force=True)
    assert forced.promote and forced.forced and forced.reason.startswith("FORCED")
    assert not decide_promotion(candidate_f1=0.9, active_f1=0.8, force=True).forced


def test_training_due_counts_new_labels() -> None:
    """A scheduled run trains only with at least N new labels; N = 0 always trains."""
    assert not training_due(new_labels=4, min_new_labels=5)
    assert training_due(new_labels=5, min_new_labels=5)
    assert training_due(new_labels=0, min_new_labels=0)


def test_version_names_sort_by_time_in_utc() -> None:
    """Versions are UTC timestamps, so later runs sort later whatever the local zone."""
    cet = dt.timezone(dt.timedelta(hours=1))
    assert make_version(dt.datetime(2026, 3, 1, 13, 0, 5, tzinfo=cet)) == "20260301T120005Z"
    assert make_version(dt.datetime(2026, 3, 1, 12, 0, 6, tzinfo=dt.UTC)) > "20260301T120005Z"


def test_an_imported_version_without_an_evaluation_set() -> None:
    """First model of a site: promoted; against an active model with no common set: only with --force."""
    from types import SimpleNamespace

    from training.promotion import decide_without_evaluation_set

    first = decide_without_evaluation_set(version="seed", active=None, force=False)
    assert first.promote and not first.forced and "no active model" in first.reason
    active = SimpleNamespace(version="v1")
    refused = decide_without_evaluation_set(version="seed", active=active, force=False)  # type: ignore[arg-type]
    assert not refused.promote and "refused" in refused.reason
    forced = decide_without_evaluation_set(version="seed", active=active, force=True)  # type: ignore[arg-type]
    assert forced.promote and forced.forced and forced.reason.startswith("FORCED")
