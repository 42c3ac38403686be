"""`kidneyct models`: the group, `list` and `export`; every subcommand is registered at the end.

`promote`, `import`, `shadow` and `compare` live in models_<name>.py; none imports Keras at import time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import structlog

from kidneyct.commands.models_compare import compare_command
from kidneyct.commands.models_import import import_command
from kidneyct.commands.models_promote import promote_command
from kidneyct.commands.models_shadow import shadow_command
from kidneyct.database import make_database
from kidneyct.settings import Settings

if TYPE_CHECKING:
    from storage.db.tables import ModelVersion

log = structlog.get_logger(__name__)


@click.group()
def models() -> None:
    """List, promote, import, export, shadow and compare model versions."""


@click.command("list")
@click.pass_obj
def list_command(settings: Settings) -> None:
    """Show every model version: status (and shadow), macro-F1 on each held-out set (the set named), parity
    and acceptance of an import, and the promotion note (a forced promotion's reason included)."""
    from storage.db.model_versions import list_model_versions

    with make_database(settings)() as session:
        versions = list_model_versions(session)
    if not versions:
        click.echo("no model versions")
        return
    click.echo("\n".join(version_table(versions)))


# The card's metrics entries `models list` shows, and the held-out set each was computed on.
LISTED_FIGURES = {
    "grouped_test": ("TEST-F1", "the run's grouped test split (whole scans never trained or selected on)"),
    "latest_ids_test": ("LATEST-F1", "the run's latest-IDs block (the highest IDs of each class, held out)"),
}


def _f1(metrics: dict[str, Any] | None, key: str) -> str:
    entry = (metrics or {}).get(key) or {}
    f1, n = entry.get("macro_f1"), entry.get("n")
    if f1 is None:
        return "-"
    return f"{f1:.3f}" + (f" n={n}" if n is not None else "")


def version_table(versions: Sequence[ModelVersion]) -> list[str]:
    """The table of `models list`, then a legend naming the held-out set behind every figure."""
    widths = (20, 17, 20, 14, 14, 13, 18, 12)
    head = (
        "VERSION",
        "STATUS",
        "CREATED",
        *(label for label, _ in LISTED_FIGURES.values()),
        "PARITY",
        "ACCEPTANCE",
        "MANIFEST",
    )
    lines = [" ".join(f"{h:<{w}}" for h, w in zip(head, widths, strict=True)) + " NOTE"]
    for v in versions:
        status = f"{v.status}+shadow" if v.shadow and v.status != "active" else v.status
        parity, acceptance = _import_columns(v.card or {})
        cells = (
            v.version,
            status,
            f"{v.created_at:%Y-%m-%d %H:%M:%S}",
            *(_f1(v.metrics, key) for key in LISTED_FIGURES),
            parity,
            acceptance,
            (v.manifest_hash or "-")[:12],
        )
        lines.append(
            " ".join(f"{c:<{w}}" for c, w in zip(cells, widths, strict=True)) + f" {v.promotion_note or ''}"
        )
    lines += [""] + [f"{label}: macro-F1 on {what}; n = slices." for label, what in LISTED_FIGURES.values()]
    lines.append(
        "NOTE: the promotion gate's figures, recomputed at promotion on the test split and the latest IDs "
        "together (for an imported version: the active model's), so they differ from both columns."
    )
    return lines


def _import_columns(card: dict) -> tuple[str, str]:  # type: ignore[type-arg]
    """PARITY and ACCEPTANCE of `models list`: `-` for a version trained here (its gate is its test split)."""
    record = (card.get("extra") or {}).get("import")
    if not isinstance(record, dict):
        return "-", "-"
    parity = record.get("parity") or {}
    if parity.get("checked"):
        figure = f"{parity['max_abs_diff']:.1e}" + (" FORCED" if record.get("forced") else "")
    else:
        figure = "not checked"
    accepted = record.get("acceptance")
    if not accepted:
        return figure, "none"
    return figure, f"acc {accepted['accuracy']:.3f} n={accepted['slices']}"


@click.command("export")
@click.argument("version")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.pass_obj
def export_command(settings: Settings, version: str, directory: Path) -> None:
    """Write VERSION's artifact, card and registration to DIRECTORY (for `models import DIRECTORY` elsewhere)."""
    from storage.db.model_versions import get_model_version

    with make_database(settings)() as session:  # an unknown version is answered before Keras loads
        if get_model_version(session, version=version) is None:
            raise click.ClickException(f"no model version {version!r} (see `kidneyct models list`)")
    from training.model_transfer import TransferError, export_version

    try:
        with make_database(settings)() as session:
            export_version(session, version=version, destination=directory, now=dt.datetime.now(dt.UTC))
    except TransferError as exc:
        raise click.ClickException(str(exc)) from exc
    log.info("model_version_exported", version=version)
    click.echo(f"exported {version} to {directory}")


for _command in (
    list_command,
    promote_command,
    import_command,
    export_command,
    shadow_command,
    compare_command,
):
    models.add_command(_command)
