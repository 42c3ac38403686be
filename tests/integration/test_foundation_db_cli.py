"""`kidneyct db upgrade|downgrade|current`, run as the installed console script, on both databases."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import inspect

from storage.db.engine import make_engine
from storage.db.tables import Base


def _kidneyct(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = str(Path(sys.executable).parent / "kidneyct")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KIDNEYCT_")}
    return subprocess.run(
        [script, *args], env={**clean, **env}, capture_output=True, text=True, timeout=300, check=False
    )


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_db_upgrade_creates_the_embedded_database(tmp_path: Path) -> None:
    """On a fresh data dir, `kidneyct db upgrade` creates the SQLite file with the whole schema."""
    data_dir = tmp_path / "fresh" / "data"
    result = _kidneyct(
        "db", "upgrade", env={"KIDNEYCT_DATA_DIR": str(data_dir), "KIDNEYCT_LOG_FORMAT": "json"}
    )
    assert result.returncode == 0, result.stderr
    database = data_dir / "kidneyct.db"
    assert database.is_file()
    assert _tables(f"sqlite:///{database}") == set(Base.metadata.tables) | {"alembic_version"}
    assert '"event": "database_upgraded"' in result.stderr


def test_db_upgrade_downgrade_on_the_configured_database(database_url: str, tmp_path: Path) -> None:
    """With KIDNEYCT_DATABASE_URL, upgrade creates, `current` reports and `downgrade base` removes the schema."""
    env = {"KIDNEYCT_DATABASE_URL": database_url, "KIDNEYCT_DATA_DIR": str(tmp_path / "data")}
    upgraded = _kidneyct("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert set(Base.metadata.tables) <= _tables(database_url)

    current = _kidneyct("db", "current", env=env)
    assert current.returncode == 0, current.stderr
    assert "(head)" in current.stdout + current.stderr

    downgraded = _kidneyct("db", "downgrade", "base", env=env)
    assert downgraded.returncode == 0, downgraded.stderr
    assert _tables(database_url) - {"alembic_version"} == set()


def test_db_upgrade_reports_an_unreachable_database(tmp_path: Path) -> None:
    """An unreachable database is a one-line error (no traceback, no password) and a non-zero exit."""
    env = {
        "KIDNEYCT_DATABASE_URL": "postgresql+psycopg://nobody:s3cret-pw@127.0.0.1:1/none?connect_timeout=2",
        "KIDNEYCT_DATA_DIR": str(tmp_path / "data"),
    }
    result = _kidneyct("db", "upgrade", env=env)
    assert result.returncode == 1
    assert "Error: cannot reach the database" in result.stderr
    assert "127.0.0.1" in result.stderr
    assert "Traceback" not in result.stderr
    assert "s3cret-pw" not in result.stderr
