"""The database of the settings: one engine and session factory per process, made in `main`."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from kidneyct.settings import Settings
from storage.db import make_engine, make_session_factory


def make_database(settings: Settings) -> sessionmaker[Session]:
    """A session factory for the configured database (the embedded SQLite file by default)."""
    url = settings.resolved_database_url()
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return make_session_factory(make_engine(url))
