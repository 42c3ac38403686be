"""What every long-running command shares: a graceful stop on SIGTERM/SIGINT and the
/metrics, /healthz and /readyz endpoint.

    stop = GracefulStop(log_event="worker_stopping").on_request(runner.request_stop).install()
    with metrics_endpoint(registry, host=..., port=..., readiness=...):
        runner.run()
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

import structlog
from prometheus_client import CollectorRegistry

from common.errors import binding
from common.health import Readiness
from common.metrics import MetricsServer, serve_metrics

log = structlog.get_logger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulStop:
    """A stop request, from a signal or from code: sets `event`, then calls each registered callback."""

    def __init__(self, *, log_event: str | None = None) -> None:
        self.event = threading.Event()
        self._log_event = log_event
        self._callbacks: list[Callable[[], None]] = []

    def on_request(self, callback: Callable[[], None]) -> GracefulStop:
        self._callbacks.append(callback)
        return self

    def install(self) -> GracefulStop:
        """Handle SIGTERM and SIGINT from now on (call it from the main thread)."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_signal)
        return self

    def request(self, reason: str) -> None:
        if self._log_event is not None:
            log.info(self._log_event, signal=reason)
        self.event.set()
        for callback in self._callbacks:
            callback()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.request(signal.Signals(signum).name)


def start_metrics_endpoint(
    registry: CollectorRegistry, *, host: str, port: int, readiness: Readiness | None = None
) -> MetricsServer | None:
    """Serve `registry` with /healthz and /readyz when `port` > 0; a port that cannot be bound is
    a `PortUnavailable` naming it."""
    if port <= 0:
        return None
    with binding("the metrics endpoint", host, port):
        return serve_metrics(registry, host=host, port=port, readiness=readiness)


@contextmanager
def metrics_endpoint(
    registry: CollectorRegistry, *, host: str, port: int, readiness: Readiness | None = None
) -> Iterator[MetricsServer | None]:
    """`start_metrics_endpoint` for the duration of a `with` block."""
    server = start_metrics_endpoint(registry, host=host, port=port, readiness=readiness)
    try:
        yield server
    finally:
        if server is not None:
            server.close()
