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
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click
import structlog

from classifier.model.device import DeviceError, parse_device, pin_device
from common.runtime import GracefulStop, start_metrics_endpoint
from kidneyct.settings import Settings

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from classifier.worker.loop import Worker

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
    _pin_device(settings)  # before Keras is imported
    from common.process_metrics import process_registry
    from kidneyct.database import open_database

    sessions = open_database(settings, migrate_embedded=True)  # a schema refused before Keras loads
    _require_device(settings)
    failures = _Process(settings, sessions, process_registry(), workers).run()
    if failures:
        raise click.ClickException(f"a worker failed: {failures[0]!r}")


def _pin_device(settings: Settings) -> None:
    try:
        pin_device(parse_device(settings.device), os.environ)
    except DeviceError as exc:
        raise click.BadParameter(str(exc), param_hint="KIDNEYCT_DEVICE") from exc


def _require_device(settings: Settings) -> None:
    import keras

    from classifier.model.device import require_device

    try:
        require_device(parse_device(settings.device), keras.backend.backend())
    except DeviceError as exc:
        raise click.BadParameter(str(exc), param_hint="KIDNEYCT_DEVICE") from exc


class _Process:
    """The components of one `serve` process, built from the settings, run until a stop is requested."""

    def __init__(self, settings: Settings, sessions: Any, registry: CollectorRegistry, workers: int) -> None:
        from classifier.worker.metrics import WorkerMetrics
        from ingest.metrics import IngestMetrics
        from kidneyct.streams import make_publisher
        from kidneyct.wiring.classifier import build_worker
        from kidneyct.wiring.ingest import build_catalog, build_listener

        self.settings, self.sessions, self.registry = settings, sessions, registry
        # Listener, workers and catalogue share this process: a publish to the embedded queue wakes
        # the consumers at once instead of at their next poll.
        self.doorbell = threading.Condition()
        self.publisher = make_publisher(settings, sessions, doorbell=self.doorbell)
        try:
            self.listener = build_listener(
                settings, publisher=self.publisher, metrics=IngestMetrics(registry)
            )
            worker_metrics = WorkerMetrics(registry)
            self.wired = [
                build_worker(settings, sessions, metrics=worker_metrics, doorbell=self.doorbell)
                for _ in range(workers)
            ]
            self.sender = _result_sender_thread(settings, sessions, registry)
            self.catalog = (
                build_catalog(settings, sessions, doorbell=self.doorbell)
                if settings.catalog_in_listener
                else None
            )
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        self.runners = [w.worker for w in self.wired]
        self.failures: list[BaseException] = []

    def run(self) -> list[BaseException]:
        """Serve until SIGTERM/SIGINT or a worker's crash; the failures of the workers, if any."""
        from kidneyct.wiring.ingest import run_until_stopped

        settings = self.settings
        metrics_server = self._metrics_endpoint()
        stop = GracefulStop(log_event="serve_stopping")
        for runner in self.runners:
            stop.on_request(runner.request_stop)
        stop.install()
        threads = self._start_background(stop.event)
        log.info(
            "serve_started", workers=len(self.runners), stream="kafka" if settings.uses_kafka else "embedded"
        )
        run_until_stopped(
            self.listener,
            publisher=self.publisher,
            stop=stop.event,
            grace_s=settings.shutdown_grace_s,
            metrics_server=metrics_server,
        )
        self._join(threads)
        log.info("serve_stopped")
        return self.failures

    def _metrics_endpoint(self) -> Any:
        from common.health import process_readiness

        readiness = process_readiness(
            sessions=self.sessions,
            kafka_bootstrap=self.settings.kafka_bootstrap,
            models_loaded=lambda: all(r.model_loaded for r in self.runners),
            catalog_connected=self.catalog.is_connected if self.catalog is not None else None,
        )
        return start_metrics_endpoint(
            self.registry,
            host=self.settings.metrics_host,
            port=self.settings.metrics_port,
            readiness=readiness,
        )

    def _start_background(self, stop: threading.Event) -> _Background:
        from ingest.catalog import start_catalog_thread

        workers = [
            threading.Thread(
                target=run_worker_when_model_active,
                args=(runner, stop, self.settings.model_poll_s, self.failures),
                name=f"worker-{i}",
                daemon=True,
            )
            for i, runner in enumerate(self.runners)
        ]
        for thread in workers:
            thread.start()
        if self.sender is not None:
            self.sender.start(stop)
        catalog = start_catalog_thread(self.catalog, stop) if self.catalog is not None else None
        return _Background(workers, catalog)

    def _join(self, background: _Background) -> None:
        """After the listener drained: stop and join the workers, the sender and the catalogue."""
        for runner in self.runners:
            runner.request_stop()
        for thread in background.workers:
            thread.join()
        if self.sender is not None:
            self.sender.join()
        if background.catalog is not None:
            background.catalog.join(timeout=30)
        for w in self.wired:
            w.close()


@dataclass(frozen=True)
class _Background:
    workers: list[threading.Thread]
    catalog: threading.Thread | None


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
    from classifier.worker.errors import NoActiveModel

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
            # The line the README tells a user to wait for, as `kidneyct worker` logs it.
            log.info("worker_started", worker=threading.current_thread().name)
            runner.run()
            return
    except BaseException as exc:  # noqa: BLE001 - reported, then the process stops with an error
        log.exception("worker_failed")
        failures.append(exc)
        stop.set()
