"""A read-only reporting role for the two public views (PostgreSQL only).

`kidneyct_reporting` (NOLOGIN) may read `instance_results` and `study_results` and nothing else.
People and tools log in as their own role made a member of it (docs/foundation.md, "Reporting access").
Roles belong to the whole PostgreSQL server, so it is created only when missing and is not
dropped on downgrade (another kidneyct database on the server may use it). A migrating user
without CREATEROLE skips the creation with a notice; a DBA can then create the role and
re-run the grants below. A later migration that re-creates a public view must grant it again.

Revision ID: 0012_reporting_role
Revises: 0011_results_outbox
"""

from __future__ import annotations

from alembic import op

revision = "0012_reporting_role"
down_revision = "0011_results_outbox"
branch_labels = None
depends_on = None

ROLE = "kidneyct_reporting"
PUBLIC_VIEWS = ("instance_results", "study_results")

_CREATE_AND_GRANT = f"""
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN
        BEGIN
            CREATE ROLE {ROLE} NOLOGIN;
        EXCEPTION
            WHEN duplicate_object THEN NULL;  -- created meanwhile by a migration of another database
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'kidneyct: no CREATEROLE privilege, {ROLE} not created';
                RETURN;
        END;
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO {ROLE}', current_schema());
    EXECUTE 'GRANT SELECT ON {", ".join(PUBLIC_VIEWS)} TO {ROLE}';
END
$$;
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite has no roles: file permissions decide who reads the embedded database
    op.execute(_CREATE_AND_GRANT)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"""
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN
        EXECUTE 'REVOKE SELECT ON {", ".join(PUBLIC_VIEWS)} FROM {ROLE}';
        EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM {ROLE}', current_schema());
    END IF;
END
$$;
"""
    )
