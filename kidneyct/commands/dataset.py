"""`kidneyct dataset import-folder`: register a labelled image folder as training data, in place."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click
import structlog

from common.progress import progress_bars, progress_wanted
from common.vocabulary import CLASS_NAMES
from kidneyct.database import make_database
from kidneyct.settings import Settings

log = structlog.get_logger(__name__)


@click.group()
def dataset() -> None:
    """Register labelled image folders as training data."""


@dataset.command("import-folder")
@click.argument("root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--source", default=None, help="Source name recorded with each image (default: folder:<name>).")
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bars on stderr (default: only on a terminal, never with JSON logs).",
)
@click.pass_obj
def import_folder_command(settings: Settings, root: Path, source: str | None, progress: bool | None) -> None:
    """Register ROOT/{Cyst,Normal,Stone,Tumor}/*.jpg in place (nothing is copied)."""
    from training.importer import ImportFolderError, import_folder

    try:
        with (
            progress_bars(progress_wanted(progress, log_format=settings.log_format)) as stages,
            make_database(settings).begin() as session,
        ):
            summary = import_folder(
                session,
                root=root,
                classes=CLASS_NAMES,
                source=source or f"folder:{root.resolve().name}",
                now=dt.datetime.now(dt.UTC),
                progress=stages("hashing and registering images"),
            )
    except ImportFolderError as exc:
        raise click.ClickException(str(exc)) from exc
    per_class = ", ".join(f"{c} {n}" for c, n in sorted(summary.per_class.items()))
    click.echo(
        f"{summary.created} new, {summary.updated} changed, {summary.unchanged} unchanged ({per_class})"
    )
    for entry in summary.ignored:
        click.echo(f"ignored: {entry}", err=True)
