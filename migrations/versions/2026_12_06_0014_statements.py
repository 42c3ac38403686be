"""Statements a radiologist can weigh: shift flags per slice, indeterminate study results.

- `predictions.shift_score`, `predictions.shifted`: the shift detector's score of the slice and its flag
  (NULL for model versions without a detector).
- `study_predictions.indeterminate_reason`, `.evidence`, `.n_shifted`: why the label is withheld (NULL
  when answered), the label's mean calibrated probability, the slices flagged as unlike the training data.
- The public views, old columns unchanged in name and order: `study_results.label` is NULL when the
  study is indeterminate; appended `indeterminate_reason`, `evidence`, `n_shifted`;
  `instance_results` appends `shift_score` and `shifted`. The views are dropped and re-created, so the
  reporting role's grant (0012) is given again on PostgreSQL.

Revision ID: 0014_statements
Revises: 0013_shadow_models
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_statements"
down_revision = "0013_shadow_models"
branch_labels = None
depends_on = None

# The views of 0011 (copied: a migration is frozen once released), then this revision's.
OLD_INSTANCE_RESULTS = """
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
         WHEN NOT EXISTS (SELECT 1 FROM result_objects ro JOIN result_deliveries rd ON rd.object_id = ro.id WHERE ro.report_id = rr.id) THEN 'not_sent'
         WHEN EXISTS (SELECT 1 FROM result_objects ro JOIN result_deliveries rd ON rd.object_id = ro.id WHERE ro.report_id = rr.id AND rd.state = 'failed') THEN 'failed'
         WHEN EXISTS (SELECT 1 FROM result_objects ro JOIN result_deliveries rd ON rd.object_id = ro.id WHERE ro.report_id = rr.id AND rd.state = 'pending') THEN 'pending'
         ELSE 'delivered'
       END AS delivery_state
FROM study_predictions sp
JOIN studies st ON st.id = sp.study_id
JOIN model_versions mv ON mv.id = sp.model_version_id
LEFT JOIN result_reports rr ON rr.id = (
    SELECT MAX(r2.id) FROM result_reports r2
    WHERE r2.study_id = sp.study_id AND r2.model_version_id = sp.model_version_id)
"""

INSTANCE_RESULTS = """
CREATE VIEW instance_results AS
SELECT i.sop_instance_uid, se.series_instance_uid, st.study_instance_uid, p.frame,
       mv.version AS model_version, p.label, p.p_cyst, p.p_normal, p.p_stone, p.p_tumor, p.created_at,
       p.shift_score, p.shifted
FROM predictions p
JOIN instances i ON i.id = p.instance_id
JOIN series se ON se.id = i.series_id
JOIN studies st ON st.id = se.study_id
JOIN model_versions mv ON mv.id = p.model_version_id
"""

STUDY_RESULTS = """
CREATE VIEW study_results AS
SELECT st.study_instance_uid, st.accession_number, mv.version AS model_version,
       CASE WHEN sp.indeterminate_reason IS NULL THEN sp.label END AS label,
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
         WHEN NOT EXISTS (SELECT 1 FROM result_objects ro JOIN result_deliveries rd ON rd.object_id = ro.id WHERE ro.report_id = rr.id) THEN 'not_sent'
         WHEN EXISTS (SELECT 1 FROM result_objects ro JOIN result_deliveries rd ON rd.object_id = ro.id WHERE ro.report_id = rr.id AND rd.state = 'failed') THEN 'failed'
         WHEN EXISTS (SELECT 1 FROM result_objects ro JOIN result_deliveries rd ON rd.object_id = ro.id WHERE ro.report_id = rr.id AND rd.state = 'pending') THEN 'pending'
         ELSE 'delivered'
       END AS delivery_state,
       sp.indeterminate_reason, sp.evidence, sp.n_shifted
FROM study_predictions sp
JOIN studies st ON st.id = sp.study_id
JOIN model_versions mv ON mv.id = sp.model_version_id
LEFT JOIN result_reports rr ON rr.id = (
    SELECT MAX(r2.id) FROM result_reports r2
    WHERE r2.study_id = sp.study_id AND r2.model_version_id = sp.model_version_id)
"""

# The grant of 0012: dropping a view drops its grants on PostgreSQL.
_GRANT = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'kidneyct_reporting') THEN
        BEGIN
            CREATE ROLE kidneyct_reporting NOLOGIN;
        EXCEPTION
            WHEN duplicate_object THEN NULL;  -- created meanwhile by a migration of another database
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'kidneyct: no CREATEROLE privilege, kidneyct_reporting not created';
                RETURN;
        END;
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO kidneyct_reporting', current_schema());
    EXECUTE 'GRANT SELECT ON instance_results, study_results TO kidneyct_reporting';
END
$$;
"""


def _regrant() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_GRANT)


def upgrade() -> None:
    # Plain ADD COLUMNs (no table rebuild on SQLite, which the views on these tables would forbid).
    op.add_column("predictions", sa.Column("shift_score", sa.Float(), nullable=True))
    op.add_column("predictions", sa.Column("shifted", sa.Boolean(), nullable=True))
    op.add_column("study_predictions", sa.Column("indeterminate_reason", sa.String(32), nullable=True))
    op.add_column("study_predictions", sa.Column("evidence", sa.Float(), nullable=True))
    op.add_column("study_predictions", sa.Column("n_shifted", sa.Integer(), nullable=True))
    op.execute("DROP VIEW study_results")
    op.execute("DROP VIEW instance_results")
    op.execute(INSTANCE_RESULTS)
    op.execute(STUDY_RESULTS)
    _regrant()


def downgrade() -> None:
    op.execute("DROP VIEW study_results")
    op.execute("DROP VIEW instance_results")
    for table, column in (
        ("study_predictions", "n_shifted"),
        ("study_predictions", "evidence"),
        ("study_predictions", "indeterminate_reason"),
        ("predictions", "shifted"),
        ("predictions", "shift_score"),
    ):
        op.drop_column(table, column)  # SQLite (>= 3.35) drops them in place, as PostgreSQL does
    op.execute(OLD_INSTANCE_RESULTS)
    op.execute(OLD_STUDY_RESULTS)
    _regrant()
