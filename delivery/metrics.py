"""Prometheus metrics of the result sender, on a registry it is given."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class SenderMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.delivered = Counter(
            "kidneyct_results_delivered",
            "Result objects stored by a destination.",
            ["kind"],
            registry=registry,
        )
        self.attempts_failed = Counter(
            "kidneyct_results_attempts_failed",
            "Delivery attempts that failed (retried later).",
            registry=registry,
        )
        self.failed = Counter(
            "kidneyct_results_failed",
            "Deliveries given up after the last attempt (state `failed`).",
            registry=registry,
        )
        self.outbox = Gauge(
            "kidneyct_results_outbox", "Deliveries in the outbox, by state.", ["state"], registry=registry
        )
