"""The promotion rule and the schedule rule, as pure functions."""

from __future__ import annotations

import datetime as dt

from training.promotion import decide_promotion
from training.registry import make_version, training_due


def _vs(difference: float, low: float, high: float, candidate: float = 0.6) -> dict[str, float | list[float]]:
    return {
        "candidate_macro_f1": candidate,
        "other_macro_f1": candidate - difference,
        "difference": difference,
        "interval": [low, high],
    }


def test_first_model_must_beat_the_baselines_too() -> None:
    """With no active model the baselines still gate: a candidate inside their uncertainty is refused."""
    clear = decide_promotion(
        comparisons={"nearest_neighbour": _vs(0.2, 0.05, 0.3), "ridge": _vs(0.15, 0.01, 0.3)}, force=False
    )
    assert clear.promote and not clear.forced and "beats all" in clear.reason
    unclear = decide_promotion(
        comparisons={"nearest_neighbour": _vs(0.05, -0.02, 0.1), "ridge": _vs(0.15, 0.01, 0.3)}, force=False
    )
    assert not unclear.promote and unclear.reason.startswith(
        "refused: does not clearly beat nearest_neighbour"
    )


def test_an_interval_touching_zero_is_not_enough() -> None:
    """Better on average but not by more than the uncertainty (lower bound at 0) is refused; equal is refused."""
    assert not decide_promotion(comparisons={"active v1": _vs(0.04, 0.0, 0.09)}, force=False).promote
    assert not decide_promotion(comparisons={"active v1": _vs(0.0, 0.0, 0.0)}, force=False).promote
    assert decide_promotion(comparisons={"active v1": _vs(0.04, 0.001, 0.09)}, force=False).promote


def test_force_overrides_and_records_the_reason_and_what_it_overrode() -> None:
    """--force promotes a candidate that loses, the note starts FORCED with the reason and names the loser."""
    forced = decide_promotion(
        comparisons={"ridge": _vs(-0.1, -0.2, -0.01)}, force=True, force_reason="rollback after incident 12"
    )
    assert forced.promote and forced.forced
    assert forced.reason.startswith(
        "FORCED (reason: rollback after incident 12): does not clearly beat ridge"
    )
    assert not decide_promotion(comparisons={"ridge": _vs(0.1, 0.05, 0.2)}, force=True).forced


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
    """First model of a site: only on its acceptance result (issue 24); against an active model with no
    common set: only with --force."""
    from types import SimpleNamespace

    from training.promotion import decide_without_evaluation_set

    seed = SimpleNamespace(version="seed", card={"extra": {"import": {"parity": {"checked": True}}}})
    first = decide_without_evaluation_set(candidate=seed, active=None, force=False)  # type: ignore[arg-type]
    assert not first.promote and "no acceptance result" in first.reason
    active = SimpleNamespace(version="v1")
    refused = decide_without_evaluation_set(candidate=seed, active=active, force=False)  # type: ignore[arg-type]
    assert not refused.promote and "refused" in refused.reason
    forced = decide_without_evaluation_set(candidate=seed, active=active, force=True, force_reason="r")  # type: ignore[arg-type]
    assert forced.promote and forced.forced and forced.reason.startswith("FORCED (reason: r)")
