"""`kidneyct listen`: run the DICOM C-STORE listener until SIGTERM or SIGINT."""

from __future__ import annotations

import click

from common.health import process_readiness
from common.process_metrics import process_registry
from common.runtime import GracefulStop, start_metrics_endpoint
from ingest.catalog import start_catalog_thread
from ingest.metrics import IngestMetrics
from kidneyct.database import make_database, require_schema
from kidneyct.settings import Settings
from kidneyct.streams import make_publisher
from kidneyct.wiring.ingest import build_catalog, build_listener, run_until_stopped


@click.command("listen", short_help="Receive CT over DICOM C-STORE, archive and publish it.")
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
    catalog = build_catalog(settings, sessions) if settings.catalog_in_listener else None
    # The embedded queue is the database; with Kafka the listener needs only the broker.
    readiness = process_readiness(
        sessions=None if settings.uses_kafka else sessions,
        kafka_bootstrap=settings.kafka_bootstrap,
        catalog_connected=catalog.is_connected if catalog is not None else None,
    )
    metrics_server = start_metrics_endpoint(
        metrics.registry, host=settings.metrics_host, port=settings.metrics_port, readiness=readiness
    )
    stop = GracefulStop().install()
    catalog_thread = start_catalog_thread(catalog, stop.event) if catalog is not None else None
    run_until_stopped(
        listener,
        publisher=publisher,
        stop=stop.event,
        grace_s=settings.shutdown_grace_s,
        metrics_server=metrics_server,
    )
    if catalog_thread is not None:
        catalog_thread.join(timeout=30)


@click.command("catalog", short_help="Record every received instance in the database.")
@click.pass_obj
def catalog(settings: Settings) -> None:
    """Record every received instance in the database (state `received`), model or no model."""
    stop = GracefulStop().install()
    build_catalog(settings, make_database(settings)).run(stop.event)
