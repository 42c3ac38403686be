"""`kidneyct serve`: the C-STORE listener and classifier worker(s) in one process.

Without `KIDNEYCT_KAFKA_BOOTSTRAP` it runs on the embedded default: SQLite in the data folder (its
schema is created or upgraded at start), the durable database queue and a local archive. With
Kafka and a PostgreSQL URL it runs the very same components against them. Nothing is lost across a
crash: the listener answers success only after the archive and the event are durable, and the
worker commits its position only after the database commit, so a restart replays what was pending.

The listener accepts instances even before a model is active, and the catalogue (`ingest.catalog`)
records each one at once, so labels and training find them; the worker waits for an active model
(`kidneyct models promote`) and then works through the backlog.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

import click
import structlog

from classifier.device import DeviceError, parse_device, pin_device
from kidneyct.settings import Settings

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from classifier.worker import Worker

log = structlog.get_logger(__name__)


@click.command("serve")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Classifier workers (threads) in this process; more than one needs Kafka.",
)
@click.pass_obj
def serve(settings: Settings, workers: int) -> None:
    """Run the DICOM listener and the classifier worker(s) together."""
    if workers > 1 and not settings.uses_kafka:
        raise click.BadParameter(
            "the embedded queue serves one consumer per group: use --workers 1 or configure Kafka",
            param_hint="--workers",
        )
    try:
        pin_device(parse_device(settings.device), os.environ)
    except DeviceError as exc:
        raise click.BadParameter(str(exc), param_hint="KIDNEYCT_DEVICE") from exc

    import keras

    from classifier.device import require_device
    from classifier.metrics import WorkerMetrics
    from common.errors import binding
    from common.health import process_readiness
    from common.metrics import serve_metrics
    from common.registry import process_registry
    from ingest.catalog import start_catalog_thread
    from ingest.metrics import IngestMetrics
    from kidneyct.database import make_database, require_schema
    from kidneyct.streams import make_publisher
    from kidneyct.wiring.classifier import build_worker
    from kidneyct.wiring.ingest import build_catalog, build_listener, run_until_stopped

    try:
        require_device(parse_device(settings.device), keras.backend.backend())
    except DeviceError as exc:
        raise click.BadParameter(str(exc), param_hint="KIDNEYCT_DEVICE") from exc
    url = settings.resolved_database_url()
    if url.startswith("sqlite"):
        # The embedded default creates what it needs; a shared PostgreSQL is migrated by `kidneyct db upgrade`.
        import migrations

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        migrations.upgrade(url)
    sessions = make_database(settings)
    require_schema(sessions)
    registry = process_registry()
    metrics = IngestMetrics(registry)
    listener_publisher = make_publisher(settings, sessions)
    try:
        listener = build_listener(settings, publisher=listener_publisher, metrics=metrics)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    worker_metrics = WorkerMetrics(registry)
    try:
        wired = [build_worker(settings, sessions, metrics=worker_metrics) for _ in range(workers)]
        sender_thread = _result_sender_thread(settings, sessions, registry)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    runners = [w.worker for w in wired]
    metrics_server = None
    if settings.metrics_port > 0:
        readiness = process_readiness(
            sessions=sessions,
            kafka_bootstrap=settings.kafka_bootstrap,
            models_loaded=lambda: all(r.model_loaded for r in runners),
        )
        with binding("the metrics endpoint", settings.metrics_host, settings.metrics_port):
            metrics_server = serve_metrics(
                registry, host=settings.metrics_host, port=settings.metrics_port, readiness=readiness
            )
    stop = threading.Event()
    failures: list[BaseException] = []

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("serve_stopping", signal=signal.Signals(signum).name)
        stop.set()
        for runner in runners:
            runner.request_stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    threads = [
        threading.Thread(
            target=run_worker_when_model_active,
            args=(runner, stop, settings.model_poll_s, failures),
            name=f"worker-{i}",
            daemon=True,
        )
        for i, runner in enumerate(runners)
    ]
    for thread in threads:
        thread.start()
    if sender_thread is not None:
        sender_thread.start(stop)
    catalog = (
        start_catalog_thread(build_catalog(settings, sessions), stop)
        if settings.catalog_in_listener
        else None
    )
    log.info("serve_started", workers=workers, stream="kafka" if settings.uses_kafka else "embedded")
    run_until_stopped(
        listener,
        publisher=listener_publisher,
        stop=stop,
        grace_s=settings.shutdown_grace_s,
        metrics_server=metrics_server,
    )
    for runner in runners:
        runner.request_stop()
    for thread in threads:
        thread.join()
    if sender_thread is not None:
        sender_thread.join()
    if catalog is not None:
        catalog.join(timeout=30)
    for w in wired:
        w.close()
    log.info("serve_stopped")
    if failures:
        raise click.ClickException(f"a worker failed: {failures[0]!r}")


class _SenderThread:
    """The outbox sender beside the workers, when result destinations are set."""

    def __init__(self, sender: Any) -> None:
        self._sender = sender
        self._thread: threading.Thread | None = None

    def start(self, stop: threading.Event) -> None:
        self._thread = threading.Thread(
            target=self._sender.run, args=(stop,), name="result-sender", daemon=True
        )
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()


def _result_sender_thread(
    settings: Settings, sessions: Any, registry: CollectorRegistry
) -> _SenderThread | None:
    if not settings.result_destinations.strip():
        return None
    from delivery.metrics import SenderMetrics
    from kidneyct.wiring.delivery import build_sender

    return _SenderThread(build_sender(settings, sessions, SenderMetrics(registry)))


def run_worker_when_model_active(
    runner: Worker, stop: threading.Event, poll_s: float, failures: list[BaseException]
) -> None:
    """Wait for an active model, then consume until stopped; a crash stops the whole process."""
    from classifier.errors import NoActiveModel

    waiting = False
    try:
        while not stop.is_set():
            try:
                runner.start()
            except NoActiveModel as exc:
                if not waiting:
                    log.warning("waiting_for_active_model", reason=str(exc), poll_s=poll_s)
                    waiting = True
                stop.wait(poll_s)
                continue
            runner.run()
            return
    except BaseException as exc:  # noqa: BLE001 - reported, then the process stops with an error
        log.exception("worker_failed")
        failures.append(exc)
        stop.set()
