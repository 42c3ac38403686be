"""Prometheus metrics of a classifier worker, on a registry it is given."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

# A batch takes from milliseconds (a few slices on a GPU) to tens of seconds (224 px on a CPU).
_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# C-STORE success to prediction row: sub-second when keeping up, minutes while a backlog drains.
_LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


@dataclass(frozen=True, slots=True)
class _On:
    """Declares the worker's metrics on one registry, under one name prefix."""

    registry: CollectorRegistry
    prefix: str = "kidneyct_worker_"

    def counter(self, name: str, doc: str, *labels: str) -> Counter:
        return Counter(self.prefix + name, doc, list(labels), registry=self.registry)

    def histogram(
        self, name: str, doc: str, *labels: str, buckets: tuple[float, ...] = _SECONDS_BUCKETS
    ) -> Histogram:
        return Histogram(self.prefix + name, doc, list(labels), buckets=buckets, registry=self.registry)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        on = _On(registry)
        self.events = on.counter("events", "Instance events written (predicted or poisoned).")
        self.frames_predicted = on.counter("frames_predicted", "Frames (slices) run through the model.")
        self.instances_poisoned = on.counter(
            "instances_poisoned",
            "Events that cannot be processed, by resulting instance state.",
            "state",
        )
        self.predict_seconds = on.histogram("predict_seconds", "Model inference of one batch.")
        self.write_seconds = on.histogram("write_seconds", "Database transaction of one batch.")
        self.studies_completed = on.counter("studies_completed", "Studies marked complete and announced.")
        self.studies_indeterminate = on.counter(
            "studies_indeterminate",
            "Completed studies whose label was withheld (indeterminate), by reason.",
            "reason",
        )
        self.frames_shifted = on.counter(
            "frames_shifted",
            "Frames (slices) the shift detector flagged as unlike the model's training images.",
        )
        self.dependency_retries = on.counter(
            "dependency_retries",
            "Retries while the database or the stream was unavailable.",
            "action",
        )
        self.model_switches = on.counter("model_loads", "Model versions loaded (start and switches).")
        self.store_to_prediction_seconds = on.histogram(
            "store_to_prediction_seconds",
            "From the listener's C-STORE success (the event's received_at) to the committed prediction rows.",
            buckets=_LATENCY_BUCKETS,
        )
        self.backlog = Gauge(
            "kidneyct_worker_backlog",
            "Instance events published but not yet read by this worker (consumer lag).",
            registry=registry,
        )
        self.model = Info("kidneyct_worker_model", "The model version the worker serves.", registry=registry)
        self.model_ready = Gauge(
            "kidneyct_worker_model_ready",
            "1 once an active model is loaded; 0 while the worker waits for one (not ready).",
            registry=registry,
        )
        # Per model version (active, shadow, reprocess): what each model predicted and how long it took.
        self.decodes = on.counter("decodes", "DICOM instances decoded into model input tensors.")
        self.version_frames_predicted = on.counter(
            "version_frames_predicted",
            "Frames predicted, per model version and role (active, shadow, reprocess).",
            "model_version",
            "role",
        )
        self.version_predict_seconds = on.histogram(
            "version_predict_seconds",
            "Inference of one batch, per model version and role.",
            "model_version",
            "role",
        )
