"""Initial schema: studies, series, instances, predictions, study predictions, labels, dataset images,
model versions, the embedded queue, and the public views `instance_results` and `study_results`.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

CLASSES = "('Cyst', 'Normal', 'Stone', 'Tumor')"


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _label_check(table: str) -> sa.CheckConstraint:
    return sa.CheckConstraint(f"label IN {CLASSES}", name=op.f(f"ck_{table}_label"))


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

STUDY_RESULTS = """
CREATE VIEW study_results AS
SELECT st.study_instance_uid, st.accession_number, mv.version AS model_version, sp.label,
       sp.p_cyst, sp.p_normal, sp.p_stone, sp.p_tumor, sp.n_instances, sp.complete, sp.updated_at
FROM study_predictions sp
JOIN studies st ON st.id = sp.study_id
JOIN model_versions mv ON mv.id = sp.model_version_id
"""


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("accession_number", sa.String(16), nullable=True),
        _ts("first_received_at"),
        _ts("last_received_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_studies")),
        sa.UniqueConstraint("study_instance_uid", name=op.f("uq_studies_study_instance_uid")),
    )
    op.create_table(
        "series",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("series_instance_uid", sa.String(64), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("modality", sa.String(16), nullable=True),
        sa.ForeignKeyConstraint(
            ["study_id"], ["studies.id"], name=op.f("fk_series_study_id_studies"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_series")),
        sa.UniqueConstraint("series_instance_uid", name=op.f("uq_series_series_instance_uid")),
    )
    op.create_index(op.f("ix_series_study_id"), "series", ["study_id"])
    op.create_table(
        "instances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("transfer_syntax_uid", sa.String(64), nullable=False),
        sa.Column("archive_uri", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("calling_ae", sa.String(16), nullable=True),
        sa.Column("instance_number", sa.Integer(), nullable=True),
        sa.Column("number_of_frames", sa.Integer(), nullable=False),
        _ts("received_at"),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("state_reason", sa.Text(), nullable=True),
        _ts("updated_at"),
        sa.CheckConstraint(
            "state IN ('received', 'processed', 'failed', 'skipped')", name=op.f("ck_instances_state")
        ),
        sa.ForeignKeyConstraint(
            ["series_id"], ["series.id"], name=op.f("fk_instances_series_id_series"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instances")),
        sa.UniqueConstraint("sop_instance_uid", name=op.f("uq_instances_sop_instance_uid")),
    )
    op.create_index(op.f("ix_instances_series_id"), "instances", ["series_id"])
    op.create_index("ix_instances_state_received_at", "instances", ["state", "received_at"])
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("artifact_uri", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("card", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("manifest_hash", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        _ts("created_at"),
        _ts("promoted_at", nullable=True),
        sa.Column("promotion_note", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('candidate', 'active', 'retired')", name=op.f("ck_model_versions_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_versions")),
        sa.UniqueConstraint("version", name=op.f("uq_model_versions_version")),
    )
    op.create_index(
        "uq_model_versions_one_active",
        "model_versions",
        ["status"],
        unique=True,
        postgresql_where=sa.text("status = 'active'"),
        sqlite_where=sa.text("status = 'active'"),
    )
    op.create_table(
        "predictions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("frame", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("p_cyst", sa.Float(), nullable=False),
        sa.Column("p_normal", sa.Float(), nullable=False),
        sa.Column("p_stone", sa.Float(), nullable=False),
        sa.Column("p_tumor", sa.Float(), nullable=False),
        _ts("created_at"),
        _label_check("predictions"),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instances.id"],
            name=op.f("fk_predictions_instance_id_instances"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_predictions_model_version_id_model_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_predictions")),
        sa.UniqueConstraint(
            "instance_id",
            "frame",
            "model_version_id",
            name=op.f("uq_predictions_instance_id_frame_model_version_id"),
        ),
    )
    op.create_index(
        "ix_predictions_model_version_id_created_at", "predictions", ["model_version_id", "created_at"]
    )
    op.create_table(
        "study_predictions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("p_cyst", sa.Float(), nullable=False),
        sa.Column("p_normal", sa.Float(), nullable=False),
        sa.Column("p_stone", sa.Float(), nullable=False),
        sa.Column("p_tumor", sa.Float(), nullable=False),
        sa.Column("n_cyst", sa.Integer(), nullable=False),
        sa.Column("n_normal", sa.Integer(), nullable=False),
        sa.Column("n_stone", sa.Integer(), nullable=False),
        sa.Column("n_tumor", sa.Integer(), nullable=False),
        sa.Column("n_instances", sa.Integer(), nullable=False),
        sa.Column("complete", sa.Boolean(), nullable=False),
        _ts("completed_at", nullable=True),
        _ts("updated_at"),
        _label_check("study_predictions"),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["studies.id"],
            name=op.f("fk_study_predictions_study_id_studies"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["model_versions.id"],
            name=op.f("fk_study_predictions_model_version_id_model_versions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_study_predictions")),
        sa.UniqueConstraint(
            "study_id", "model_version_id", name=op.f("uq_study_predictions_study_id_model_version_id")
        ),
    )
    op.create_index(op.f("ix_study_predictions_model_version_id"), "study_predictions", ["model_version_id"])
    op.create_table(
        "dataset_images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("source", sa.String(128), nullable=False),
        _ts("created_at"),
        _label_check("dataset_images"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dataset_images")),
        sa.UniqueConstraint("path", name=op.f("uq_dataset_images_path")),
    )
    op.create_index(op.f("ix_dataset_images_sha256"), "dataset_images", ["sha256"])
    op.create_table(
        "labels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=True),
        sa.Column("study_instance_uid", sa.String(64), nullable=True),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("annotator", sa.String(128), nullable=True),
        _ts("created_at"),
        _label_check("labels"),
        sa.CheckConstraint(
            "(sop_instance_uid IS NOT NULL AND study_instance_uid IS NULL)"
            " OR (sop_instance_uid IS NULL AND study_instance_uid IS NOT NULL)",
            name=op.f("ck_labels_one_target"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_labels")),
    )
    op.create_index(op.f("ix_labels_sop_instance_uid"), "labels", ["sop_instance_uid"])
    op.create_index(op.f("ix_labels_study_instance_uid"), "labels", ["study_instance_uid"])
    op.create_index("ix_labels_created_at", "labels", ["created_at"])
    op.create_table(
        "queue_messages",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=True),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_messages")),
    )
    op.create_index("ix_queue_messages_topic_id", "queue_messages", ["topic", "id"])
    op.create_table(
        "queue_offsets",
        sa.Column("group_id", sa.String(255), nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("group_id", "topic", name=op.f("pk_queue_offsets")),
    )
    op.execute(INSTANCE_RESULTS)
    op.execute(STUDY_RESULTS)


def downgrade() -> None:
    op.execute("DROP VIEW study_results")
    op.execute("DROP VIEW instance_results")
    for table in (
        "queue_offsets",
        "queue_messages",
        "labels",
        "dataset_images",
        "study_predictions",
        "predictions",
        "model_versions",
        "instances",
        "series",
        "studies",
    ):
        op.drop_table(table)
