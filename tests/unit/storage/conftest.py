"""A migrated SQLite database per test: storage's functions run on the real schema, no server."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

import migrations
from storage.db.engine import make_engine, make_session_factory


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    url = f"sqlite:///{tmp_path / 'kidneyct.db'}"
    migrations.upgrade(url)
    return make_session_factory(make_engine(url))
