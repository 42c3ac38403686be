"""The database of the settings: one engine and session factory per process, made in `main`."""

from __future__ import annotations

from sqlalchemy import inspect
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from common.errors import SchemaMissing
from kidneyct.settings import Settings
from storage.db.engine import make_engine, make_session_factory


def make_database(settings: Settings) -> sessionmaker[Session]:
    """A session factory for the configured database (the embedded SQLite file by default)."""
    url = settings.resolved_database_url()
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return make_session_factory(make_engine(url))


def upgrade_schema(settings: Settings) -> None:
    """Create or upgrade the schema of the configured database (the embedded folder is created)."""
    import migrations  # imported here to keep `kidneyct --help` light

    url = settings.resolved_database_url()
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrations.upgrade(url)


def upgrade_embedded(settings: Settings) -> None:
    """`upgrade_schema` for the embedded SQLite only; a shared PostgreSQL is left to `kidneyct db upgrade`."""
    if settings.resolved_database_url().startswith("sqlite"):
        upgrade_schema(settings)


def open_database(settings: Settings, *, migrate_embedded: bool = False) -> sessionmaker[Session]:
    """The session factory of a process that needs the schema: refuses a database never migrated.
    With `migrate_embedded`, the embedded default is first created or upgraded (`kidneyct serve`)."""
    if migrate_embedded:
        upgrade_embedded(settings)
    sessions = make_database(settings)
    require_schema(sessions)
    return sessions


def require_schema(sessions: sessionmaker[Session]) -> None:
    """Refuse to start on a database that `kidneyct db upgrade` never ran on.

    Otherwise the listener would answer every C-STORE 0xA700 and a worker would retry forever.
    An unreachable database is not refused here: the components wait for it and retry.
    """
    engine = sessions.kw["bind"]
    try:
        with engine.connect() as connection:
            migrated = inspect(connection).has_table("alembic_version")
    except OperationalError:
        return
    if not migrated:
        raise SchemaMissing()
