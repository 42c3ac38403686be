"""`kidneyct serve` logs `worker_started` for each worker, the line the README tells a user to wait for."""

from __future__ import annotations

import threading

from structlog.testing import capture_logs

from classifier.worker.errors import NoActiveModel
from kidneyct.serve import run_worker_when_model_active


class _Runner:
    """Stands in for a Worker: no active model on the first try, then a run that returns at once."""

    def __init__(self) -> None:
        self.starts = 0
        self.ran = False

    def start(self) -> None:
        self.starts += 1
        if self.starts == 1:
            raise NoActiveModel("no active model version")

    def run(self) -> None:
        self.ran = True


def test_serve_worker_logs_worker_started_once_the_model_is_active() -> None:
    """`waiting_for_active_model` while none is active, then `worker_started` before consuming."""
    runner = _Runner()
    failures: list[BaseException] = []
    with capture_logs() as logs:
        run_worker_when_model_active(runner, threading.Event(), 0.01, failures)  # type: ignore[arg-type]
    events = [entry["event"] for entry in logs]
    assert events == ["waiting_for_active_model", "worker_started"]
    assert runner.ran and failures == []
