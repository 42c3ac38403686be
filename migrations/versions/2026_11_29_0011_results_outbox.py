"""Results back to PACS: report revisions, their DICOM objects, the delivery outbox, the accession
number's issuer, and `study_results` with turnaround, failed/skipped counts, key slices, revision,
whether the model is active, and the delivery state (old columns unchanged, new ones appended).

Revision ID: 0011_results_outbox
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_results_outbox"
down_revision = "0001"
branch_labels = None
depends_on = None

CLASSES = "('Cyst', 'Normal', 'Stone', 'Tumor')"

INSTANCE_RESULTS = """
CREATE VIEW instance_results AS
SELECT i.sop_instance_uid, se.series_instance_uid, st.study_instance_uid, p.frame,
       mv.version AS model_version, p.label, p.p_cyst, p.p_normal, p.p_stone, p.p_tumor, p.created_at
FROM predictions p
JOIN instances i ON i.id = p.instance_id
JOIN series se ON se.id = i.series_id
JOIN studies st ON st.id = se.study_id
JOIN model_versions mv ON mv.id = p.model_version_id
"""

OLD_STUDY_RESULTS = """
CREATE VIEW study_results AS
SELECT st.study_instance_uid, st.accession_number, mv.version AS model_version, sp.label,
       sp.p_cyst, sp.p_normal, sp.p_stone, sp.p_tumor, sp.n_instances, sp.complete, sp.updated_at
FROM study_predictions sp
JOIN studies st ON st.id = sp.study_id
JOIN model_versions mv ON mv.id = sp.model_version_id
"""

_DELIVERIES_OF_REPORT = "SELECT 1 FROM result_objects ro JOIN result_deliveries rd ON rd.object_id = ro.id WHERE ro.report_id = rr.id"

# p_* stay what they were: per class, the highest probability any slice of the study got.
STUDY_RESULTS = f"""
CREATE VIEW study_results AS
SELECT st.study_instance_uid, st.accession_number, mv.version AS model_version, sp.label,
       sp.p_cyst, sp.p_normal, sp.p_stone, sp.p_tumor, sp.n_instances, sp.complete, sp.updated_at,
       st.accession_number_issuer, st.first_received_at, st.last_received_at,
       (SELECT COUNT(*) FROM instances i JOIN series se ON se.id = i.series_id
        WHERE se.study_id = st.id AND i.state = 'failed') AS n_failed,
       (SELECT COUNT(*) FROM instances i JOIN series se ON se.id = i.series_id
        WHERE se.study_id = st.id AND i.state = 'skipped') AS n_skipped,
       rr.key_slices, rr.revision,
       CASE WHEN mv.status = 'active' THEN 1 ELSE 0 END AS from_active_model,
       CASE
         WHEN rr.id IS NULL THEN NULL
         WHEN rr.build_error IS NOT NULL THEN 'build_failed'
         WHEN NOT EXISTS ({_DELIVERIES_OF_REPORT}) THEN 'not_sent'
         WHEN EXISTS ({_DELIVERIES_OF_REPORT} AND rd.state = 'failed') THEN 'failed'
         WHEN EXISTS ({_DELIVERIES_OF_REPORT} AND rd.state = 'pending') THEN 'pending'
         ELSE 'delivered'
       END AS delivery_state
FROM study_predictions sp
JOIN studies st ON st.id = sp.study_id
JOIN model_versions mv ON mv.id = sp.model_version_id
LEFT JOIN result_reports rr ON rr.id = (
    SELECT MAX(r2.id) FROM result_reports r2
    WHERE r2.study_id = sp.study_id AND r2.model_version_id = sp.model_version_id)
"""


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.add_column("studies", sa.Column("accession_number_issuer", sa.String(64), nullable=True))
    op.create_table(
        "result_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("key_slices", sa.Text(), nullable=False),
        sa.Column("build_error", sa.Text(), nullable=True),
        _ts("created_at"),
        sa.CheckConstraint(f"label IN {CLASSES}", name=op.f("ck_result_reports_label")),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_result_reports_study_id_studies"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_result_reports_model_version_id_model_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_result_reports")),
        sa.UniqueConstraint("study_id", "revision", name=op.f("uq_result_reports_study_id_revision")),
    )
    op.create_index(op.f("ix_result_reports_model_version_id"), "result_reports", ["model_version_id"])
    op.create_table(
        "result_objects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("report_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("dataset", sa.LargeBinary(), nullable=False),
        _ts("created_at"),
        sa.CheckConstraint("kind IN ('sr', 'pmap', 'sc')", name=op.f("ck_result_objects_kind")),
        sa.ForeignKeyConstraint(
            ["report_id"],
            ["result_reports.id"],
            name=op.f("fk_result_objects_report_id_result_reports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_result_objects")),
        sa.UniqueConstraint("sop_instance_uid", name=op.f("uq_result_objects_sop_instance_uid")),
    )
    op.create_index(op.f("ix_result_objects_report_id"), "result_objects", ["report_id"])
    op.create_table(
        "result_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("object_id", sa.Integer(), nullable=False),
        sa.Column("destination", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ts("next_attempt_at"),
        _ts("claimed_until", nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("delivered_at", nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'delivered', 'failed')", name=op.f("ck_result_deliveries_state")
        ),
        sa.ForeignKeyConstraint(
            ["object_id"],
            ["result_objects.id"],
            name=op.f("fk_result_deliveries_object_id_result_objects"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_result_deliveries")),
        sa.UniqueConstraint(
            "object_id", "destination", name=op.f("uq_result_deliveries_object_id_destination")
        ),
    )
    op.create_index(
        "ix_result_deliveries_state_next_attempt_at", "result_deliveries", ["state", "next_attempt_at"]
    )
    op.execute("DROP VIEW study_results")
    op.execute(STUDY_RESULTS)


def downgrade() -> None:
    op.execute("DROP VIEW study_results")
    op.drop_table("result_deliveries")
    op.drop_table("result_objects")
    op.drop_table("result_reports")
    # SQLite rebuilds the table to drop a column, which a view on it forbids: drop both, then recreate.
    op.execute("DROP VIEW instance_results")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("accession_number_issuer")
    op.execute(INSTANCE_RESULTS)
    op.execute(OLD_STUDY_RESULTS)
