"""`kidneyct listen`: run the DICOM C-STORE listener until SIGTERM or SIGINT."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import click

from common.errors import binding
from common.health import process_readiness
from common.metrics import serve_metrics
from common.registry import process_registry
from ingest.catalog import start_catalog_thread
from ingest.metrics import IngestMetrics
from kidneyct.database import make_database, require_schema
from kidneyct.settings import Settings
from kidneyct.streams import make_publisher
from kidneyct.wiring.ingest import build_catalog, build_listener, run_until_stopped


@click.command("listen")
@click.pass_obj
def listen(settings: Settings) -> None:
    """Receive CT over DICOM C-STORE, archive each instance and publish its event."""
    metrics = IngestMetrics(process_registry())
    sessions = make_database(settings)
    if not settings.uses_kafka:
        require_schema(sessions)  # the embedded queue lives in the database
    publisher = make_publisher(settings, sessions)
    try:
        listener = build_listener(settings, publisher=publisher, metrics=metrics)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    metrics_server = None
    if settings.metrics_port > 0:
        # The embedded queue is the database; with Kafka the listener needs only the broker.
        readiness = process_readiness(
            sessions=None if settings.uses_kafka else sessions, kafka_bootstrap=settings.kafka_bootstrap
        )
        with binding("the metrics endpoint", settings.metrics_host, settings.metrics_port):
            metrics_server = serve_metrics(
                metrics.registry, host=settings.metrics_host, port=settings.metrics_port, readiness=readiness
            )

    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    catalog = None
    if settings.catalog_in_listener:
        catalog = start_catalog_thread(build_catalog(settings, sessions), stop)
    run_until_stopped(
        listener,
        publisher=publisher,
        stop=stop,
        grace_s=settings.shutdown_grace_s,
        metrics_server=metrics_server,
    )
    if catalog is not None:
        catalog.join(timeout=30)


@click.command("catalog")
@click.pass_obj
def catalog(settings: Settings) -> None:
    """Record every received instance in the database (state `received`), model or no model."""
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    build_catalog(settings, make_database(settings)).run(stop)
