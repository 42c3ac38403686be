"""The batching decision: full batch, nothing more waiting, time limit, idle wait (only with nothing in hand)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from classifier.worker.batching import BatchPolicy, next_poll

POLICY = BatchPolicy(max_size=8, max_wait_s=0.05, idle_wait_s=0.5)


def test_empty_batch_waits_the_idle_time_for_a_full_batch() -> None:
    """With nothing in hand, poll for a whole batch and wait up to the idle time."""
    plan = next_poll(POLICY, n_pending=0, first_at=None, now=100.0)
    assert (plan.done, plan.max_records, plan.timeout_s) == (False, 8, 0.5)


def test_partial_batch_takes_only_what_is_waiting() -> None:
    """Three records, the first 20 ms ago: ask for five more, without waiting for them to arrive."""
    plan = next_poll(POLICY, n_pending=3, first_at=100.0, now=100.02)
    assert (plan.done, plan.max_records, plan.timeout_s) == (False, 5, 0.0)


def test_partial_batch_closes_when_nothing_more_is_waiting() -> None:
    """The last poll came back empty: the batch goes now, not after the max wait (latency at low rates)."""
    assert next_poll(POLICY, n_pending=3, first_at=100.0, now=100.0, drained=True).done


def test_with_a_batch_in_hand_an_empty_batch_does_not_wait() -> None:
    """`wait=False` (a batch is predicting or being written): poll what is there, never the idle time."""
    plan = next_poll(POLICY, n_pending=0, first_at=None, now=100.0, wait=False)
    assert (plan.done, plan.max_records, plan.timeout_s) == (False, 8, 0.0)


def test_full_batch_is_done() -> None:
    """A full batch closes at once."""
    assert next_poll(POLICY, n_pending=8, first_at=100.0, now=100.0).done


def test_expired_batch_is_done() -> None:
    """A partial batch closes when the max wait since its first record has passed."""
    assert next_poll(POLICY, n_pending=1, first_at=100.0, now=100.06).done


@given(
    n=st.integers(min_value=0, max_value=20),
    age=st.floats(min_value=0, max_value=1),
)
def test_never_asks_for_more_than_fits(n: int, age: float) -> None:
    """Whatever the state, a poll never asks for more records than the batch has room for."""
    plan = next_poll(POLICY, n_pending=n, first_at=10.0 if n else None, now=10.0 + age)
    if not plan.done:
        assert 0 < plan.max_records <= POLICY.max_size - n
        assert 0 <= plan.timeout_s <= max(POLICY.max_wait_s, POLICY.idle_wait_s)


def test_invalid_policy_is_refused() -> None:
    """Batch size below one is a configuration error."""
    with pytest.raises(ValueError):
        BatchPolicy(max_size=0, max_wait_s=0.1)
