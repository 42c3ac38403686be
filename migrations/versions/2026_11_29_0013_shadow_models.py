"""Shadow models: a candidate version can run beside the active one on live traffic, and the study
results a shadow (or a reprocess under a version that is not active) writes are kept out of the
clinical path: never announced on the results topic, never written to the outbox for PACS.

- `model_versions.shadow`: workers load every version with it set (and not active) as a shadow.
- `study_predictions.shadow`: the row was last written by a shadow model or a non-active reprocess;
  the worker's completion sweep marks such rows complete without a clinical message or a report.

Revision ID: 0013_shadow_models
Revises: 0012_reporting_role
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_shadow_models"
down_revision = "0012_reporting_role"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN (no table rebuild on SQLite, which the views on these tables would forbid).
    op.add_column(
        "model_versions", sa.Column("shadow", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column(
        "study_predictions", sa.Column("shadow", sa.Boolean(), nullable=False, server_default=sa.false())
    )


def downgrade() -> None:
    # No view reads these columns: SQLite (>= 3.35) drops them in place, as PostgreSQL does.
    op.drop_column("study_predictions", "shadow")
    op.drop_column("model_versions", "shadow")
