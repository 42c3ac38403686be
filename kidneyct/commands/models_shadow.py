"""`kidneyct models shadow VERSION [--off]`: run a candidate beside the active model on live traffic."""

from __future__ import annotations

import click
import structlog

from kidneyct.database import make_database
from kidneyct.settings import Settings
from storage.db.model_versions import ModelVersionNotFound
from storage.db.shadow_models import ShadowRefused, set_shadow, shadow_versions

log = structlog.get_logger(__name__)


@click.command("shadow")
@click.argument("version", required=False)
@click.option("--off", is_flag=True, help="Stop shadowing VERSION.")
@click.pass_obj
def shadow_command(settings: Settings, version: str | None, off: bool) -> None:
    """Workers run VERSION beside the active model on every live batch (one decode, two predictions),
    writing its rows under its own version; its results never reach the clinical study label, the
    results topic or PACS. Without VERSION: list the shadows."""
    sessions = make_database(settings)
    if version is None:
        if off:
            raise click.UsageError("--off needs the VERSION to stop shadowing")
        with sessions() as session:
            names = [v.version for v in shadow_versions(session)]
        click.echo("shadow model versions: " + (", ".join(names) if names else "none"))
        return
    try:
        with sessions.begin() as session:
            set_shadow(session, version=version, on=not off)
    except (ModelVersionNotFound, ShadowRefused) as exc:
        raise click.ClickException(str(exc)) from None
    log.info("shadow_model_set", model_version=version, shadow=not off)
    click.echo(
        f"{version} is no longer a shadow"
        if off
        else f"{version} is a shadow model: workers pick it up within KIDNEYCT_MODEL_POLL_S"
    )
