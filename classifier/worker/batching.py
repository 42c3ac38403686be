"""When a batch is full enough: a pure decision over the records in hand and the clock.

A batch closes when it holds `max_size` records, when the stream has nothing more waiting (a poll
after the first record came back empty: waiting for instances that have not arrived only adds
latency, and while this batch predicts the next one fills), or when `max_wait_s` has passed since
its first record. With nothing in hand the worker waits up to `idle_wait_s` for a first record, so
that it can look at its stop flag and at the model registry in between; with a batch already in
hand (`wait=False`) it only takes what is waiting.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_size: int
    max_wait_s: float
    idle_wait_s: float = 0.5

    def __post_init__(self) -> None:
        if self.max_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.max_size}")
        if self.max_wait_s < 0:
            raise ValueError(f"batch wait must not be negative, got {self.max_wait_s}")


@dataclass(frozen=True, slots=True)
class NextPoll:
    """Poll for up to `max_records` waiting at most `timeout_s`, or stop when `done`."""

    done: bool
    max_records: int = 0
    timeout_s: float = 0.0


def next_poll(
    policy: BatchPolicy,
    *,
    n_pending: int,
    first_at: float | None,
    now: float,
    drained: bool = False,
    wait: bool = True,
) -> NextPoll:
    """What to do next while filling a batch that holds `n_pending` records, the first at `first_at`;
    `drained`: the last poll found nothing; `wait`: nothing else is in hand, so an idle wait is fine."""
    if n_pending >= policy.max_size:
        return NextPoll(done=True)
    if n_pending == 0 or first_at is None:
        return NextPoll(
            done=False, max_records=policy.max_size, timeout_s=policy.idle_wait_s if wait else 0.0
        )
    if drained or now - first_at >= policy.max_wait_s:
        return NextPoll(done=True)
    # Only what is already waiting: the batch is not held back for instances still to come.
    return NextPoll(done=False, max_records=policy.max_size - n_pending, timeout_s=0.0)
