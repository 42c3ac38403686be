"""`kidneyct send-results`: the outbox sender on its own, for deployments that scale it apart
from `kidneyct serve` (which runs one itself when destinations are set). Several may run at once."""

from __future__ import annotations

import click
import structlog
from prometheus_client import CollectorRegistry

from kidneyct.settings import Settings

log = structlog.get_logger(__name__)


@click.command("send-results", short_help="Send the outbox's results (SR, heat maps) to PACS.")
@click.option("--once", is_flag=True, help="Send what is due now, then exit.")
@click.pass_obj
def send_results(settings: Settings, once: bool) -> None:
    """Send the results waiting in the outbox to their PACS destinations (C-STORE)."""
    from common.runtime import GracefulStop, metrics_endpoint
    from delivery.metrics import SenderMetrics
    from kidneyct.database import make_database
    from kidneyct.wiring.delivery import build_sender

    metrics = SenderMetrics(CollectorRegistry())
    try:
        sender = build_sender(settings, make_database(settings), metrics)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if once:
        click.echo(f"{sender.send_due()} deliveries attempted")
        return
    stop = GracefulStop(log_event="result_sender_stopping").install()
    with metrics_endpoint(metrics.registry, host=settings.metrics_host, port=settings.metrics_port):
        sender.run(stop.event)
