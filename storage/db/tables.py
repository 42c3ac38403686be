"""The relational schema: SQLAlchemy 2.0 typed models.

Alembic migrations in `migrations/` create this schema; `tests/integration/test_foundation_migrations.py`
fails when the models and the migrations drift apart. Analysts do not query these tables: the SQL
views `instance_results` and `study_results` (created by the migrations in `migrations/versions/`) are
the public contract.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from common.vocabulary import CLASS_NAMES, UID_LENGTH

INSTANCE_STATES: tuple[str, ...] = ("received", "processed", "failed", "skipped")
MODEL_STATUSES: tuple[str, ...] = ("candidate", "active", "retired")
RESULT_OBJECT_KINDS: tuple[str, ...] = ("sr", "pmap", "sc")
DELIVERY_STATES: tuple[str, ...] = ("pending", "delivered", "failed")
REVIEW_ROLES: tuple[str, ...] = ("reader", "admin")
VERDICTS: tuple[str, ...] = ("confirm", "correct", "not_assessable")

# Constraint names are fixed so that migrations can drop them on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware timestamp on every database; SQLite stores it naive, so UTC is restored on read."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC) if value is not None else None

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(UID_LENGTH), unique=True)
    # Kept for joins in reporting systems; it is not logged.
    accession_number: Mapped[str | None] = mapped_column(String(16))
    # Issuer of Accession Number Sequence: its local namespace or universal entity ID, when sent.
    accession_number_issuer: Mapped[str | None] = mapped_column(String(64))
    first_received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    last_received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())

    series: Mapped[list[Series]] = relationship(back_populates="study")


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_instance_uid: Mapped[str] = mapped_column(String(UID_LENGTH), unique=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    modality: Mapped[str | None] = mapped_column(String(16))

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")


class Instance(Base):
    __tablename__ = "instances"
    __table_args__ = (
        CheckConstraint(_in("state", INSTANCE_STATES), name="state"),
        Index("ix_instances_state_received_at", "state", "received_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(UID_LENGTH), unique=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(UID_LENGTH))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(UID_LENGTH))
    archive_uri: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    calling_ae: Mapped[str | None] = mapped_column(String(16))
    instance_number: Mapped[int | None] = mapped_column(Integer)
    number_of_frames: Mapped[int] = mapped_column(Integer, default=1)
    received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    state: Mapped[str] = mapped_column(String(16), default="received")
    state_reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())

    series: Mapped[Series] = relationship(back_populates="instances")


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        CheckConstraint(_in("status", MODEL_STATUSES), name="status"),
        # At most one active model: a partial unique index, the same on PostgreSQL and SQLite.
        Index(
            "uq_model_versions_one_active",
            "status",
            unique=True,
            postgresql_where=text("status = 'active'"),
            sqlite_where=text("status = 'active'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[str] = mapped_column(String(64), unique=True)
    artifact_uri: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    card: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    manifest_hash: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="candidate")
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    promoted_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    promotion_note: Mapped[str | None] = mapped_column(Text)
    # Workers run it beside the active model on live traffic, its results kept out of the clinical path.
    shadow: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Prediction(Base):
    """One prediction per instance, frame and model version."""

    __tablename__ = "predictions"
    __table_args__ = (
        UniqueConstraint("instance_id", "frame", "model_version_id"),
        CheckConstraint(_in("label", CLASS_NAMES), name="label"),
        Index("ix_predictions_model_version_id_created_at", "model_version_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"))
    frame: Mapped[int] = mapped_column(Integer)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    label: Mapped[str] = mapped_column(String(16))
    p_cyst: Mapped[float] = mapped_column(Float)
    p_normal: Mapped[float] = mapped_column(Float)
    p_stone: Mapped[float] = mapped_column(Float)
    p_tumor: Mapped[float] = mapped_column(Float)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    # The shift detector's score of the slice and whether it passed the model's threshold (classifier.model.shift);
    # NULL for a model version without a shift detector.
    shift_score: Mapped[float | None] = mapped_column(Float)
    shifted: Mapped[bool | None] = mapped_column(Boolean)


class StudyPrediction(Base):
    """The study result of one model version: the highest probability and slice count per class."""

    __tablename__ = "study_predictions"
    __table_args__ = (
        UniqueConstraint("study_id", "model_version_id"),
        CheckConstraint(_in("label", CLASS_NAMES), name="label"),
        # The review worklist pages through complete results newest first.
        Index("ix_study_predictions_complete_completed_at", "complete", "completed_at", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    label: Mapped[str] = mapped_column(String(16))
    p_cyst: Mapped[float] = mapped_column(Float)
    p_normal: Mapped[float] = mapped_column(Float)
    p_stone: Mapped[float] = mapped_column(Float)
    p_tumor: Mapped[float] = mapped_column(Float)
    n_cyst: Mapped[int] = mapped_column(Integer)
    n_normal: Mapped[int] = mapped_column(Integer)
    n_stone: Mapped[int] = mapped_column(Integer)
    n_tumor: Mapped[int] = mapped_column(Integer)
    n_instances: Mapped[int] = mapped_column(Integer)
    complete: Mapped[bool] = mapped_column(Boolean, default=False)
    completed_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    # Last written by a shadow model or a reprocess under a non-active version: never announced or sent.
    shadow: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Why the label is withheld (classifier.study.policy REASONS), NULL when answered: `label` keeps the
    # rule's label for audits and `study_results.label` shows NULL. `evidence`: how sure of that label
    # (classifier.study.evidence, as the model card defines it); `n_shifted`: slices the shift detector flagged.
    indeterminate_reason: Mapped[str | None] = mapped_column(String(32))
    evidence: Mapped[float | None] = mapped_column(Float)
    n_shifted: Mapped[int | None] = mapped_column(Integer)


class ResultReport(Base):
    """One revision of a study's report under one model version: a completed study result.

    A revision is made each time a study result becomes complete (a late instance re-opens it,
    so completing it again makes the next revision); revisions count up per study.
    """

    __tablename__ = "result_reports"
    __table_args__ = (
        UniqueConstraint("study_id", "revision"),
        CheckConstraint(_in("label", CLASS_NAMES), name="label"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(16))
    key_slices: Mapped[str] = mapped_column(
        Text
    )  # space-separated SOP Instance UIDs (`uid:frame` in multi-frame)
    build_error: Mapped[str | None] = mapped_column(Text)  # why no DICOM objects could be built
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class ResultObject(Base):
    """A DICOM object of a report (the SR, a Parametric Map, a Secondary Capture), as sent."""

    __tablename__ = "result_objects"
    __table_args__ = (CheckConstraint(_in("kind", RESULT_OBJECT_KINDS), name="kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("result_reports.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    sop_class_uid: Mapped[str] = mapped_column(String(UID_LENGTH))
    sop_instance_uid: Mapped[str] = mapped_column(String(UID_LENGTH), unique=True)
    dataset: Mapped[bytes] = mapped_column(LargeBinary)  # the DICOM file (Part 10) bytes
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class ResultDelivery(Base):
    """The outbox: one row per object and destination, written before anything is sent."""

    __tablename__ = "result_deliveries"
    __table_args__ = (
        UniqueConstraint("object_id", "destination"),
        CheckConstraint(_in("state", DELIVERY_STATES), name="state"),
        Index("ix_result_deliveries_state_next_attempt_at", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    object_id: Mapped[int] = mapped_column(ForeignKey("result_objects.id", ondelete="CASCADE"))
    destination: Mapped[str] = mapped_column(String(255))  # AE@host:port
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    claimed_until: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())  # a sender's lease
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    delivered_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())


class DatasetImage(Base):
    """A labelled training image registered in place (an imported folder); never copied."""

    __tablename__ = "dataset_images"
    __table_args__ = (CheckConstraint(_in("label", CLASS_NAMES), name="label"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    label: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class Label(Base):
    """A ground-truth label for an instance or a whole study, by a person or a process."""

    __tablename__ = "labels"
    __table_args__ = (
        CheckConstraint(_in("label", CLASS_NAMES), name="label"),
        CheckConstraint(
            "(sop_instance_uid IS NOT NULL AND study_instance_uid IS NULL)"
            " OR (sop_instance_uid IS NULL AND study_instance_uid IS NOT NULL)",
            name="one_target",
        ),
        Index("ix_labels_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # UIDs rather than foreign keys: a label may arrive before the instance is classified.
    sop_instance_uid: Mapped[str | None] = mapped_column(String(UID_LENGTH), index=True)
    study_instance_uid: Mapped[str | None] = mapped_column(String(UID_LENGTH), index=True)
    label: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(128))
    annotator: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class ReviewUser(Base):
    """An account of the review station."""

    __tablename__ = "review_users"
    __table_args__ = (CheckConstraint(_in("role", REVIEW_ROLES), name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)  # argon2id, with its parameters and salt
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    password_changed_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class ReviewAudit(Base):
    """Who did what when at the review station; no patient data (the study by its row id)."""

    __tablename__ = "review_audit"
    __table_args__ = (Index("ix_review_audit_action_at", "action", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    username: Mapped[str | None] = mapped_column(String(64))
    address: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    study_id: Mapped[int | None] = mapped_column(Integer)  # no foreign key: the trail outlives the study
    detail: Mapped[str | None] = mapped_column(Text)


class ReviewVerdict(Base):
    """A radiologist's verdict on a study result; confirm and correct also write a label."""

    __tablename__ = "review_verdicts"
    __table_args__ = (
        CheckConstraint(_in("verdict", VERDICTS), name="verdict"),
        Index("ix_review_verdicts_study_id_id", "study_id", "id"),
        Index("ix_review_verdicts_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    ai_label: Mapped[str] = mapped_column(String(16))
    verdict: Mapped[str] = mapped_column(String(16))
    label: Mapped[str | None] = mapped_column(String(16))  # the reader's class; None: not assessable
    comment: Mapped[str | None] = mapped_column(Text)
    username: Mapped[str] = mapped_column(String(64))
    label_id: Mapped[int | None] = mapped_column(ForeignKey("labels.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class QueueMessage(Base):
    """The embedded durable queue: an append-only log whose id is the offset."""

    __tablename__ = "queue_messages"
    __table_args__ = (Index("ix_queue_messages_topic_id", "topic", "id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    topic: Mapped[str] = mapped_column(String(255))
    key: Mapped[bytes | None] = mapped_column(LargeBinary)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class QueueOffset(Base):
    """The next offset a consumer group will read from a topic of the embedded queue."""

    __tablename__ = "queue_offsets"

    group_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    topic: Mapped[str] = mapped_column(String(255), primary_key=True)
    next_offset: Mapped[int] = mapped_column(BigInteger)
