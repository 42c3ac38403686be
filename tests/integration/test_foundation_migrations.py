"""Alembic migrations on SQLite and PostgreSQL: round trip, no drift from the models, views, constraints."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Engine, Integer, MetaData, inspect, text
from sqlalchemy.exc import IntegrityError

import migrations
from storage.db.engine import make_engine
from storage.db.tables import Base

VIEWS = {"instance_results", "study_results"}
# The public query contract (docs/database.md): exact columns, in this order.
INSTANCE_RESULTS_COLUMNS = [
    "sop_instance_uid",
    "series_instance_uid",
    "study_instance_uid",
    "frame",
    "model_version",
    "label",
    "p_cyst",
    "p_normal",
    "p_stone",
    "p_tumor",
    "created_at",
    # Appended by 0014 (shift detection).
    "shift_score",
    "shifted",
]
STUDY_RESULTS_COLUMNS = [
    "study_instance_uid",
    "accession_number",
    "model_version",
    "label",
    "p_cyst",
    "p_normal",
    "p_stone",
    "p_tumor",
    "n_instances",
    "complete",
    "updated_at",
    # Appended by 0011 (results back to PACS); the columns above keep their order.
    "accession_number_issuer",
    "first_received_at",
    "last_received_at",
    "n_failed",
    "n_skipped",
    "key_slices",
    "revision",
    "from_active_model",
    "delivery_state",
    # Appended by 0014 (statements: label NULL when indeterminate, and why).
    "indeterminate_reason",
    "evidence",
    "n_shifted",
]


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def _views(engine: Engine) -> set[str]:
    return set(inspect(engine).get_view_names())


def _exclude_views(obj, name, type_, reflected, compare_to) -> bool:  # noqa: ANN001 - Alembic's hook
    return not (type_ == "table" and name in VIEWS)


def _drift(engine: Engine, metadata: MetaData) -> list:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_object": _exclude_views}
        )
        return compare_metadata(context, metadata)


def test_upgrade_downgrade_upgrade_round_trip(database_url: str, engine: Engine) -> None:
    """head -> base -> head leaves the same tables and views, and base leaves nothing of ours."""
    migrations.upgrade(database_url)
    tables_at_head = _tables(engine)
    assert tables_at_head == set(Base.metadata.tables)
    assert _views(engine) == VIEWS

    migrations.downgrade(database_url, "base")
    engine.dispose()  # forget cached reflection and connections that saw the old schema
    assert _tables(engine) == set()
    assert _views(engine) == set()

    migrations.upgrade(database_url)
    engine.dispose()
    assert _tables(engine) == tables_at_head
    assert _views(engine) == VIEWS


def test_models_and_migrations_do_not_drift(migrated_database_url: str, engine: Engine) -> None:
    """Autogenerate finds no difference between the migrated schema and `storage.db.tables`."""
    assert _drift(engine, Base.metadata) == []


def test_drift_check_notices_a_new_model_column(migrated_database_url: str, engine: Engine) -> None:
    """The drift check can fail: a column that only the models have is reported."""
    changed = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["studies"].append_column(Column("not_migrated", Integer))
    differences = _drift(engine, changed)
    assert [(d[0], d[2], d[3].name) for d in differences] == [("add_column", "studies", "not_migrated")]


@pytest.mark.parametrize(
    ("view", "columns"),
    [("instance_results", INSTANCE_RESULTS_COLUMNS), ("study_results", STUDY_RESULTS_COLUMNS)],
)
def test_views_have_the_documented_columns(
    migrated_database_url: str, engine: Engine, view: str, columns: list[str]
) -> None:
    """The public views expose exactly the documented columns, in order."""
    assert [c["name"] for c in inspect(engine).get_columns(view)] == columns


def _insert_model(connection, version: str, status: str) -> None:  # noqa: ANN001
    connection.execute(
        text(
            "INSERT INTO model_versions (version, artifact_uri, sha256, card, metrics, status, created_at)"
            " VALUES (:version, 'file:///m', :sha, '{}', '{}', :status, :now)"
        ),
        {"version": version, "sha": "0" * 64, "status": status, "now": dt.datetime.now(dt.UTC)},
    )


def test_at_most_one_active_model_version(migrated_database_url: str, engine: Engine) -> None:
    """A second active model version is refused; candidates and retired ones are not limited."""
    with engine.begin() as connection:
        _insert_model(connection, "v1", "active")
        _insert_model(connection, "v2", "candidate")
        _insert_model(connection, "v3", "candidate")
        _insert_model(connection, "v0", "retired")
        _insert_model(connection, "v00", "retired")
    with pytest.raises(IntegrityError), engine.begin() as connection:
        _insert_model(connection, "v4", "active")
    with pytest.raises(IntegrityError), engine.begin() as connection:
        connection.execute(text("UPDATE model_versions SET status = 'active' WHERE version = 'v2'"))
    # Retiring the active one first makes room, in one transaction.
    with engine.begin() as connection:
        connection.execute(text("UPDATE model_versions SET status = 'retired' WHERE version = 'v1'"))
        connection.execute(text("UPDATE model_versions SET status = 'active' WHERE version = 'v2'"))
    with engine.connect() as connection:
        active = connection.execute(text("SELECT version FROM model_versions WHERE status = 'active'")).all()
    assert [row.version for row in active] == ["v2"]


def test_unknown_model_status_is_refused(migrated_database_url: str, engine: Engine) -> None:
    """The status check constraint refuses values outside candidate/active/retired."""
    with pytest.raises(IntegrityError), engine.begin() as connection:
        _insert_model(connection, "v1", "promoted")
