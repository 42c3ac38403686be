"""`kidneyct reprocess`: wiring only; the work is `kidneyct.reprocess.queue.queue_reprocess`."""

from __future__ import annotations

import datetime as dt

import click

from common.progress import progress_bars, progress_wanted
from kidneyct.commands.options import MODEL_VERSION, option
from kidneyct.database import make_database
from kidneyct.reprocess.queue import ReprocessError, describe, parse_when, queue_reprocess
from kidneyct.settings import Settings
from storage.db.reprocess import Selection


@click.command()
@click.option("--study", "studies", multiple=True, help="Study Instance UID (repeatable).")
@click.option("--accession", "accessions", multiple=True, help="Accession number (repeatable).")
@click.option(
    "--received-since",
    default=None,
    help="Studies received since: ISO date/time (UTC) or a duration (7d, 24h).",
)
@click.option(
    "--received-until", default=None, help="Studies received before: ISO date/time or a duration ago."
)
@click.option("--all", "everything", is_flag=True, help="Every archived instance.")
@option(
    MODEL_VERSION,
    "model_version",
    hidden_aliases=["--model"],
    default=None,
    help="Model version to classify under (default: the active one).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar on stderr (default: only on a terminal, never with JSON logs).",
)
@click.pass_obj
def reprocess(
    settings: Settings,
    studies: tuple[str, ...],
    accessions: tuple[str, ...],
    received_since: str | None,
    received_until: str | None,
    everything: bool,
    model_version: str | None,
    progress: bool | None,
) -> None:
    """Classify archived studies (again) under a model version.

    The instances are read from the archive's catalogue and queued for the workers; instances the
    version already classified are left alone."""
    now = dt.datetime.now(dt.UTC)
    try:
        selection = Selection(
            study_uids=studies,
            accession_numbers=accessions,
            received_since=parse_when(received_since, now=now) if received_since else None,
            received_until=parse_when(received_until, now=now) if received_until else None,
            everything=everything,
        )
        with progress_bars(progress_wanted(progress, log_format=settings.log_format)) as stages:
            queued = queue_reprocess(
                settings,
                make_database(settings),
                selection=selection,
                model_version=model_version,
                progress=stages("queueing reprocess events"),
            )
    except ReprocessError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(describe(queued))
