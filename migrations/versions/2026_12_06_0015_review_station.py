"""The review station: its accounts, its audit trail, the radiologists' verdicts, and an index
that lets the worklist page through completed study results newest first.

- `review_users`: a sign-in name, an argon2 hash, a role (`reader` or `admin`).
- `review_audit`: who did what when (sign-ins, failed sign-ins, study views, verdicts, account
  changes); failed sign-ins are also what throttling counts.
- `review_verdicts`: each verdict (confirm, correct, not assessable) on a study result; confirm and
  correct also write a `labels` row (source `radiologist`), which the trainer reads.

Revision ID: 0015_review_station
Revises: 0014_statements
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_review_station"
down_revision = "0014_statements"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "review_users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        _ts("created_at"),
        _ts("password_changed_at"),
        sa.CheckConstraint("role IN ('reader', 'admin')", name=op.f("ck_review_users_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_users")),
        sa.UniqueConstraint("username", name=op.f("uq_review_users_username")),
    )
    op.create_table(
        "review_audit",
        sa.Column("id", sa.Integer(), nullable=False),
        _ts("at"),
        sa.Column("username", sa.String(64), nullable=True),
        sa.Column("address", sa.String(64), nullable=True),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_audit")),
    )
    op.create_index("ix_review_audit_action_at", "review_audit", ["action", "at"])
    op.create_table(
        "review_verdicts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("ai_label", sa.String(16), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("label", sa.String(16), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("label_id", sa.Integer(), nullable=True),
        _ts("created_at"),
        sa.CheckConstraint(
            "verdict IN ('confirm', 'correct', 'not_assessable')", name=op.f("ck_review_verdicts_verdict")
        ),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_review_verdicts_study_id_studies"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_review_verdicts_model_version_id_model_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["label_id"], ["labels.id"], name=op.f("fk_review_verdicts_label_id_labels"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_verdicts")),
    )
    op.create_index("ix_review_verdicts_study_id_id", "review_verdicts", ["study_id", "id"])
    op.create_index("ix_review_verdicts_created_at", "review_verdicts", ["created_at"])
    # The worklist: complete results newest first, one page at a time (keyset on completed_at, id).
    op.create_index(
        "ix_study_predictions_complete_completed_at", "study_predictions", ["complete", "completed_at", "id"]
    )


def downgrade() -> None:
    op.drop_index("ix_study_predictions_complete_completed_at", table_name="study_predictions")
    op.drop_index("ix_review_verdicts_created_at", table_name="review_verdicts")
    op.drop_index("ix_review_verdicts_study_id_id", table_name="review_verdicts")
    op.drop_table("review_verdicts")
    op.drop_index("ix_review_audit_action_at", table_name="review_audit")
    op.drop_table("review_audit")
    op.drop_table("review_users")
