"""`kidneyct models compare A B`: wiring only (SQL in `storage.db.comparison`, figures in `training.compare`)."""

from __future__ import annotations

import json

import click

from kidneyct.database import make_database
from kidneyct.settings import Settings
from storage.db.comparison import comparison_sql, run_comparison
from storage.db.model_versions import get_model_version
from training.compare import render, summarize


@click.command("compare")
@click.argument("version_a")
@click.argument("version_b")
@click.option("--labelled", is_flag=True, help="Only what has a ground-truth label.")
@click.option(
    "--level",
    type=click.Choice(["study", "instance", "both"]),
    default="both",
    show_default=True,
    help="Compare study labels, instance (frame) labels, or both.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures and the SQL as JSON (for scripts).")
@click.pass_obj
def compare_command(
    settings: Settings, version_a: str, version_b: str, labelled: bool, level: str, as_json: bool
) -> None:
    """Compare two model versions over what both classified: agreement matrix, per-class changes,
    and accuracy against labels where labels exist. Prints the SQL it runs (PostgreSQL and SQLite)."""
    sessions = make_database(settings)
    levels = ["study", "instance"] if level == "both" else [level]
    out = []
    with sessions() as session:
        for version in (version_a, version_b):
            if get_model_version(session, version=version) is None:
                raise click.ClickException(f"no model version {version!r} (see `kidneyct models list`)")
        for lvl in levels:
            sql = comparison_sql(level=lvl, version_a=version_a, version_b=version_b, labelled_only=labelled)  # type: ignore[arg-type]
            summary = summarize(
                run_comparison(session, sql), version_a=version_a, version_b=version_b, level=lvl
            )
            summary["sql"] = sql
            out.append(summary)
    if as_json:
        click.echo(json.dumps(out if len(out) > 1 else out[0], indent=1))
        return
    for summary in out:
        click.echo(f"== {summary['level']} level ==")
        click.echo(render(summary))
        click.echo("SQL:\n" + summary["sql"] + "\n")
