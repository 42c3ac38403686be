"""`kidneyct label`: record ground-truth labels (one instance or study, or many from a CSV file)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click
import structlog

from common.vocabulary import CLASS_NAMES
from kidneyct.database import make_database
from kidneyct.settings import Settings

log = structlog.get_logger(__name__)


@click.command(short_help="Record ground-truth labels (one, or many from a CSV file).")
@click.option("--instance", "instance_uid", help="SOP Instance UID to label.")
@click.option("--study", "study_uid", help="Study Instance UID to label (every instance of the study).")
@click.option("--class", "label", help=f"One of {', '.join(CLASS_NAMES)} (case-insensitive).")
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Read many labels.",
)
@click.option("--source", default="manual", show_default=True, help="Where the label comes from.")
@click.option("--annotator", default=None, help="Who gave the label.")
@click.pass_obj
def label(
    settings: Settings,
    instance_uid: str | None,
    study_uid: str | None,
    label: str | None,
    csv_path: Path | None,
    source: str,
    annotator: str | None,
) -> None:
    """Record a ground-truth label for an instance or a study, or many from a CSV file."""
    from storage.db.labels import add_label
    from training.label_input import LabelInputError, make_row, read_csv

    try:
        if csv_path is not None:
            if instance_uid or study_uid or label:
                raise LabelInputError("give either --csv or --instance/--study with --class, not both")
            rows = read_csv(csv_path, default_source=source, default_annotator=annotator)
        else:
            if not label:
                raise LabelInputError(f"give the label with --class ({', '.join(CLASS_NAMES)})")
            rows = [
                make_row(
                    label=label or "",
                    source=source,
                    annotator=annotator,
                    instance=instance_uid,
                    study=study_uid,
                    where="label",
                )
            ]
    except LabelInputError as exc:
        raise click.ClickException(str(exc)) from exc
    now = dt.datetime.now(dt.UTC)
    with make_database(settings).begin() as session:  # all rows or none
        for row in rows:
            add_label(
                session,
                label=row.label,
                source=row.source,
                annotator=row.annotator,
                sop_instance_uid=row.sop_instance_uid,
                study_instance_uid=row.study_instance_uid,
                now=now,
            )
    log.info("labels_recorded", count=len(rows))
    click.echo(f"recorded {len(rows)} label(s)")
