"""The read-only reporting role on PostgreSQL: it reads the two public views and nothing else."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ProgrammingError

import migrations

ROLE = "kidneyct_reporting"


@pytest.fixture
def analyst_url(postgres_url: str) -> Iterator[str]:
    """A migrated database and a login role that is a member of the reporting role (dropped afterwards)."""
    migrations.upgrade(postgres_url)
    name = f"analyst_{uuid.uuid4().hex[:8]}"
    owner = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with owner.connect() as connection:
        connection.execute(text(f"CREATE ROLE {name} LOGIN PASSWORD 'analyst-pw' IN ROLE {ROLE}"))
    try:
        yield (
            make_url(postgres_url)
            .set(username=name, password="analyst-pw")
            .render_as_string(hide_password=False)
        )
    finally:
        with owner.connect() as connection:
            connection.execute(text(f"DROP OWNED BY {name}"))
            connection.execute(text(f"DROP ROLE {name}"))
        owner.dispose()


def test_reporting_role_reads_the_views_only(analyst_url: str) -> None:
    """A member of kidneyct_reporting can SELECT both views, but not the tables, and cannot write."""
    engine = create_engine(analyst_url)
    try:
        with engine.connect() as connection:
            for view in ("instance_results", "study_results"):
                assert connection.execute(text(f"SELECT COUNT(*) FROM {view}")).scalar_one() == 0
        for statement in (
            "SELECT COUNT(*) FROM instances",
            "SELECT COUNT(*) FROM labels",
            "INSERT INTO labels (study_instance_uid, label, source, created_at) "
            "VALUES ('1.2', 'Stone', 'x', now())",
        ):
            with engine.connect() as connection, pytest.raises(ProgrammingError, match="permission denied"):
                connection.execute(text(statement))
    finally:
        engine.dispose()


def test_reporting_grants_survive_a_downgrade_and_upgrade(postgres_url: str) -> None:
    """Downgrading past the reporting revision and upgrading again leaves the grants in place."""
    migrations.upgrade(postgres_url)
    migrations.downgrade(postgres_url, "0001")
    migrations.upgrade(postgres_url)
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as connection:
            allowed = connection.execute(
                text(
                    "SELECT has_table_privilege(:role, 'study_results', 'SELECT'),"
                    " has_table_privilege(:role, 'instances', 'SELECT')"
                ),
                {"role": ROLE},
            ).one()
    finally:
        engine.dispose()
    assert tuple(allowed) == (True, False)
