"""Prometheus metrics of the listener, on a registry of its own (never the global one at import
time), so tests and several listeners in one process do not collide."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# C-STORE handling takes milliseconds to seconds (fsync, broker acknowledgement).
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.instances_received = Counter(
            "kidneyct_ingest_instances_received", "C-STORE requests received.", registry=registry
        )
        self.instances_stored = Counter(
            "kidneyct_ingest_instances_stored",
            "Instances archived and published (answered success).",
            registry=registry,
        )
        self.instances_rejected = Counter(
            "kidneyct_ingest_instances_rejected",
            "C-STORE requests answered with a failure status.",
            ["reason"],
            registry=registry,
        )
        self.instances_replaced = Counter(
            "kidneyct_ingest_instances_replaced",
            "Instances received again with different content (kept as a new version).",
            registry=registry,
        )
        self.received_bytes = Counter(
            "kidneyct_ingest_received_bytes",
            "Bytes of received instances (file meta included).",
            registry=registry,
        )
        self.archive_seconds = _seconds(
            "kidneyct_ingest_archive_write_seconds", "Durable archive write of one instance.", registry
        )
        self.publish_seconds = _seconds(
            "kidneyct_ingest_publish_seconds", "Publish of one event until acknowledged.", registry
        )
        self.store_seconds = _seconds(
            "kidneyct_ingest_store_seconds", "Whole C-STORE handling, from received to answered.", registry
        )
        self.associations = Counter(
            "kidneyct_ingest_associations", "Association requests by outcome.", ["outcome"], registry=registry
        )
        self.associations_active = Gauge(
            "kidneyct_ingest_associations_active",
            "Associations established and not yet ended.",
            registry=registry,
        )


def _seconds(name: str, documentation: str, registry: CollectorRegistry) -> Histogram:
    """A histogram of one step's duration, on the buckets of C-STORE handling."""
    return Histogram(name, documentation, buckets=_SECONDS_BUCKETS, registry=registry)
