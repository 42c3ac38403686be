"""common.runtime: SIGTERM stops a command gracefully; the metrics endpoint serves only when asked."""

from __future__ import annotations

import os
import signal
import socket
import urllib.request
from collections.abc import Iterator

import pytest
import structlog
from prometheus_client import CollectorRegistry

from common.errors import PortUnavailable
from common.runtime import STOP_SIGNALS, GracefulStop, metrics_endpoint, start_metrics_endpoint


@pytest.fixture
def restore_signal_handlers() -> Iterator[None]:
    saved = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_sigterm_sets_the_event_logs_and_calls_back(restore_signal_handlers: None) -> None:
    """A real SIGTERM to this process sets the stop event, logs the named event and runs each callback."""
    called: list[str] = []
    stop = GracefulStop(log_event="worker_stopping").on_request(lambda: called.append("runner")).install()
    with structlog.testing.capture_logs() as logs:
        os.kill(os.getpid(), signal.SIGTERM)
    assert stop.event.is_set()
    assert called == ["runner"]
    assert {"event": "worker_stopping", "signal": "SIGTERM", "log_level": "info"} in logs


def test_metrics_endpoint_off_by_default_and_served_when_asked() -> None:
    """Port 0 in the settings means no endpoint; a free port serves /healthz until the block ends."""
    registry = CollectorRegistry()
    assert start_metrics_endpoint(registry, host="127.0.0.1", port=0) is None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with metrics_endpoint(registry, host="127.0.0.1", port=port) as server:
        assert server is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            assert answer.status == 200


def test_a_port_in_use_is_one_clear_error() -> None:
    """A port another socket holds is a PortUnavailable naming the metrics endpoint."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(PortUnavailable, match="metrics endpoint"):
            start_metrics_endpoint(CollectorRegistry(), host="127.0.0.1", port=port)
