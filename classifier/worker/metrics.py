"""Prometheus metrics of a classifier worker, on a registry it is given."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

# A batch takes from milliseconds (a few slices on a GPU) to tens of seconds (224 px on a CPU).
_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# C-STORE success to prediction row: sub-second when keeping up, minutes while a backlog drains.
_LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events = Counter(
            "kidneyct_worker_events", "Instance events written (predicted or poisoned).", registry=registry
        )
        self.frames_predicted = Counter(
            "kidneyct_worker_frames_predicted", "Frames (slices) run through the model.", registry=registry
        )
        self.instances_poisoned = Counter(
            "kidneyct_worker_instances_poisoned",
            "Events that cannot be processed, by resulting instance state.",
            ["state"],
            registry=registry,
        )
        self.predict_seconds = Histogram(
            "kidneyct_worker_predict_seconds",
            "Model inference of one batch.",
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.write_seconds = Histogram(
            "kidneyct_worker_write_seconds",
            "Database transaction of one batch.",
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
        self.studies_completed = Counter(
            "kidneyct_worker_studies_completed", "Studies marked complete and announced.", registry=registry
        )
        self.studies_indeterminate = Counter(
            "kidneyct_worker_studies_indeterminate",
            "Completed studies whose label was withheld (indeterminate), by reason.",
            ["reason"],
            registry=registry,
        )
        self.frames_shifted = Counter(
            "kidneyct_worker_frames_shifted",
            "Frames (slices) the shift detector flagged as unlike the model's training images.",
            registry=registry,
        )
        self.dependency_retries = Counter(
            "kidneyct_worker_dependency_retries",
            "Retries while the database or the stream was unavailable.",
            ["action"],
            registry=registry,
        )
        self.model_switches = Counter(
            "kidneyct_worker_model_loads", "Model versions loaded (start and switches).", registry=registry
        )
        self.store_to_prediction_seconds = Histogram(
            "kidneyct_worker_store_to_prediction_seconds",
            "From the listener's C-STORE success (the event's received_at) to the committed prediction rows.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
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
        self.decodes = Counter(
            "kidneyct_worker_decodes", "DICOM instances decoded into model input tensors.", registry=registry
        )
        self.version_frames_predicted = Counter(
            "kidneyct_worker_version_frames_predicted",
            "Frames predicted, per model version and role (active, shadow, reprocess).",
            ["model_version", "role"],
            registry=registry,
        )
        self.version_predict_seconds = Histogram(
            "kidneyct_worker_version_predict_seconds",
            "Inference of one batch, per model version and role.",
            ["model_version", "role"],
            buckets=_SECONDS_BUCKETS,
            registry=registry,
        )
