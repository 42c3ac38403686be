"""`kidneyct db`: the schema is created and changed only by Alembic migrations."""

from __future__ import annotations

from collections.abc import Callable

import click
import structlog
from sqlalchemy.exc import OperationalError

import migrations
from kidneyct.settings import Settings

log = structlog.get_logger(__name__)


def _run(action: Callable[[], None]) -> None:
    """Run a migration step; an unreachable database is a clear one-line error, not a traceback."""
    try:
        action()
    except OperationalError as exc:
        # `exc.orig` is the driver's message (host, port, reason); the URL's password is not in it.
        raise click.ClickException(f"cannot reach the database: {exc.orig}".strip()) from exc


@click.group()
def db() -> None:
    """Create or migrate the database schema."""


@db.command()
@click.argument("revision", default="head")
@click.pass_obj
def upgrade(settings: Settings, revision: str) -> None:
    """Upgrade the schema to REVISION (default: head)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _run(lambda: migrations.upgrade(settings.resolved_database_url(), revision))
    log.info("database_upgraded", revision=revision)


@db.command()
@click.argument("revision")
@click.pass_obj
def downgrade(settings: Settings, revision: str) -> None:
    """Downgrade the schema to REVISION (`base` removes everything)."""
    _run(lambda: migrations.downgrade(settings.resolved_database_url(), revision))
    log.info("database_downgraded", revision=revision)


@db.command()
@click.pass_obj
def current(settings: Settings) -> None:
    """Show the schema's current revision."""
    _run(lambda: migrations.current(settings.resolved_database_url()))
