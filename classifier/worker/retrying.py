"""The worker's way through outages: `storage.failures.retry_outages` with the worker's stop event,
backoff and retry metric, so every step waits out a dependency the same way."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from classifier.worker.metrics import WorkerMetrics
from storage.failures import Backoff, retry_outages

T = TypeVar("T")


class Retry:
    """`retry(what, action)`: `action` until it succeeds; `Abandoned` when stopped during an outage,
    `DataFailure` when it fails on its data, `SchemaMissing` without a schema (`storage.failures`)."""

    def __init__(self, *, stop: threading.Event, backoff: Backoff, metrics: WorkerMetrics) -> None:
        self._stop = stop
        self._backoff = backoff
        self._metrics = metrics

    def __call__(self, what: str, action: Callable[[], T]) -> T:
        def count(_exc: BaseException) -> None:
            self._metrics.dependency_retries.labels(action=what).inc()

        return retry_outages(action, what=what, stop=self._stop, backoff=self._backoff, on_retry=count)
