"""`Every`: the between-batches timer of model polls and study sweeps, on a clock the test moves."""

from __future__ import annotations

from classifier.worker.every import Every


def test_due_once_per_interval_and_restart_counts_from_now() -> None:
    now = [100.0]
    every = Every(5.0, lambda: now[0])
    assert every.due() and not every.due()
    now[0] = 104.9
    assert not every.due()
    now[0] = 105.0
    assert every.due()
    now[0] = 108.0
    every.restart()  # e.g. a model just loaded at start: the next poll is 5 s from now
    now[0] = 112.0
    assert not every.due()
    now[0] = 113.0
    assert every.due()
