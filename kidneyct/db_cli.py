"""`kidneyct db`: the schema is created and changed only by Alembic migrations."""

from __future__ import annotations

import click
import structlog

import migrations
from kidneyct.settings import Settings

log = structlog.get_logger(__name__)


@click.group()
def db() -> None:
    """Create or migrate the database schema."""


@db.command()
@click.argument("revision", default="head")
@click.pass_obj
def upgrade(settings: Settings, revision: str) -> None:
    """Upgrade the schema to REVISION (default: head)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrations.upgrade(settings.resolved_database_url(), revision)
    log.info("database_upgraded", revision=revision)


@db.command()
@click.argument("revision")
@click.pass_obj
def downgrade(settings: Settings, revision: str) -> None:
    """Downgrade the schema to REVISION (`base` removes everything)."""
    migrations.downgrade(settings.resolved_database_url(), revision)
    log.info("database_downgraded", revision=revision)


@db.command()
@click.pass_obj
def current(settings: Settings) -> None:
    """Show the schema's current revision."""
    migrations.current(settings.resolved_database_url())
