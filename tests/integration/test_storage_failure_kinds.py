"""Real database errors sorted by `storage.failures.failure_kind` as the worker, the catalogue and the
sender must treat them, on SQLite and PostgreSQL: a value too large for its column is data, a missing table is a missing
schema, an unreachable server is an outage."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from storage.db.engine import make_engine, make_session_factory
from storage.db.results import (
    InstanceRow,
    SeriesRow,
    StudyRow,
    upsert_instances,
    upsert_series,
    upsert_studies,
)
from storage.failures import FailureKind, failure_kind

NOW = dt.datetime(2026, 11, 29, tzinfo=dt.UTC)


def _failure(url: str, action) -> BaseException:  # noqa: ANN001 - a callable taking a session
    engine = make_engine(url)
    try:
        with make_session_factory(engine).begin() as session:
            action(session)
    except (SQLAlchemyError, OverflowError) as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError("the action did not fail")


def _instance_number(value: int):  # noqa: ANN202
    def write(session) -> None:  # noqa: ANN001
        studies = upsert_studies(session, studies=[StudyRow("1.2.3", None, NOW)])
        series = upsert_series(session, series=[SeriesRow("1.2.3.4", "1.2.3", "CT")], study_ids=studies)
        row = InstanceRow(
            "1.2.3.4.5",
            "1.2.3.4",
            "1.2.840.10008.5.1.4.1.1.2",
            "1.2.840.10008.1.2.1",
            "file:///x",
            "0" * 64,
            1,
            None,
            value,
            1,
            NOW,
            "processed",
        )
        upsert_instances(session, instances=[row], series_ids=series, now=NOW)

    return write


def test_too_large_value_is_data(migrated_database_url: str) -> None:
    """An InstanceNumber beyond the column (int4 on PostgreSQL, 64 bits on SQLite) is a data error."""
    too_large = 2**70 if migrated_database_url.startswith("sqlite") else 2**31
    assert failure_kind(_failure(migrated_database_url, _instance_number(too_large))) is FailureKind.DATA


def test_missing_table_is_a_missing_schema(database_url: str) -> None:
    """A database without the schema (no `alembic upgrade`) is SCHEMA_MISSING, not an outage."""
    exc = _failure(database_url, lambda s: s.execute(text("SELECT id FROM instances")))
    assert failure_kind(exc) is FailureKind.SCHEMA_MISSING


def test_unreachable_server_is_an_outage() -> None:
    """A server that cannot be reached is an outage (retried), not data or schema."""
    url = "postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=1"
    exc = _failure(url, lambda s: s.execute(text("SELECT 1")))
    assert failure_kind(exc) is FailureKind.OUTAGE


def test_a_migrated_database_has_the_schema(migrated_database_url: str) -> None:
    """Control: the same query on a migrated database works."""
    engine = make_engine(migrated_database_url)
    with make_session_factory(engine)() as session:
        session.execute(text("SELECT id FROM instances"))
    engine.dispose()
