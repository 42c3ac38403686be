"""`kidneyct worker`: wire settings, database, stream and model into a `Worker` and run it.

The device is pinned before Keras is imported (see `classifier.model.device`), which is why everything
that imports Keras is imported inside the command.
"""

from __future__ import annotations

import os

import click
import structlog

from classifier.model.device import DeviceError, parse_device, pin_device, require_device
from kidneyct.settings import Settings

log = structlog.get_logger(__name__)


@click.command(short_help="Classify received instances (one process per device).")
@click.option("--device", default=None, help="`cpu` or `gpu:N` (default: KIDNEYCT_DEVICE).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Default: KIDNEYCT_BATCH_SIZE.")
@click.option(
    "--mixed-precision/--no-mixed-precision", default=None, help="Default: KIDNEYCT_MIXED_PRECISION."
)
@click.pass_obj
def worker(
    settings: Settings, device: str | None, batch_size: int | None, mixed_precision: bool | None
) -> None:
    """Run a classifier worker: one process per device, in the consumer group of the settings."""
    try:
        chosen = parse_device(device or settings.device)
        pin_device(chosen, os.environ)
    except DeviceError as exc:
        raise click.BadParameter(str(exc), param_hint="--device") from exc
    from kidneyct.database import open_database

    sessions = open_database(settings)  # a database never migrated is refused before Keras loads
    import keras

    from classifier.worker.errors import DeadLetterLimitExceeded
    from classifier.worker.metrics import WorkerMetrics
    from common.errors import SchemaMissing
    from common.health import process_readiness
    from common.process_metrics import process_registry
    from common.runtime import GracefulStop, start_metrics_endpoint
    from kidneyct.wiring.classifier import build_worker
    from storage.failures import Abandoned

    try:
        require_device(chosen, keras.backend.backend())
    except DeviceError as exc:
        raise click.BadParameter(str(exc), param_hint="--device") from exc
    if mixed_precision if mixed_precision is not None else settings.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    metrics = WorkerMetrics(process_registry())
    try:
        wired = build_worker(settings, sessions, metrics=metrics, batch_size=batch_size)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    runner = wired.worker
    readiness = process_readiness(
        sessions=sessions,
        kafka_bootstrap=settings.kafka_bootstrap,
        models_loaded=lambda: runner.model_loaded,
    )
    metrics_server = start_metrics_endpoint(
        metrics.registry, host=settings.metrics_host, port=settings.metrics_port, readiness=readiness
    )
    GracefulStop(log_event="worker_stopping").on_request(runner.request_stop).install()
    try:
        if not runner.start_when_model_active():
            log.info("worker_stopped_before_start")
            return
        log.info(
            "worker_started",
            device=str(chosen),
            backend=keras.backend.backend(),
            batch_size=batch_size or settings.batch_size,
            mixed_precision=keras.mixed_precision.global_policy().name,
        )
        runner.run()
    except (SchemaMissing, DeadLetterLimitExceeded) as exc:
        raise click.ClickException(str(exc)) from exc
    except Abandoned:
        log.info("worker_stopped_before_start")  # stopped while the database was unreachable
    finally:
        wired.close()
        if metrics_server is not None:
            metrics_server.close()
