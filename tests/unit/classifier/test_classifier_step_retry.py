"""The worker's retry: storage.failures.retry_outages with the worker's stop event and retry metric."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy.exc import OperationalError
from worker_steps_kit import metrics

from classifier.worker.retrying import Retry
from storage.failures import Abandoned, Backoff, DataFailure
from storage.stream.contract import StreamUnavailable


def test_an_outage_is_waited_out_and_counted_per_action() -> None:
    """Two outages, then success: the result, and two retries under the action's label."""
    m = metrics()
    failures = [StreamUnavailable("down"), OperationalError("SELECT 1", {}, Exception("gone"))]

    def action() -> str:
        if failures:
            raise failures.pop(0)
        return "done"

    assert (
        Retry(stop=threading.Event(), backoff=Backoff(0.001, 0.001), metrics=m)("write_batch", action)
        == "done"
    )
    assert (
        m.registry.get_sample_value("kidneyct_worker_dependency_retries_total", {"action": "write_batch"})
        == 2
    )


def test_a_stop_during_an_outage_abandons_and_data_is_not_retried() -> None:
    """Stopped while waiting: Abandoned (nothing committed). A value that does not fit: DataFailure at once."""
    stop = threading.Event()
    stop.set()
    retry = Retry(stop=stop, backoff=Backoff(0.001, 0.001), metrics=metrics())

    def down() -> None:
        raise StreamUnavailable("down")

    def overflow() -> None:
        raise OverflowError("int too large")

    with pytest.raises(Abandoned):
        retry("publish_results", down)
    with pytest.raises(DataFailure):
        retry("write_batch", overflow)
