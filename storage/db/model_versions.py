"""Data access for model versions: register, look up, activate (at most one active), list.

Keyword-only functions that never commit: the caller owns the transaction.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.db.tables import MODEL_STATUSES, ModelVersion


class ModelVersionNotFound(LookupError):
    """No model version has that name."""


def register_model_version(
    session: Session,
    *,
    version: str,
    artifact_uri: str,
    sha256: str,
    card: Mapping[str, Any],
    metrics: Mapping[str, Any],
    manifest_hash: str | None,
    now: dt.datetime,
    status: str = "candidate",
) -> ModelVersion:
    """Add a model version (a candidate by default; use `activate_model_version` to make it active)."""
    if status not in MODEL_STATUSES:
        raise ValueError(f"status must be one of {MODEL_STATUSES}, got {status!r}")
    if status == "active":
        _retire_active(session, now=now, except_version=version)
    row = ModelVersion(
        version=version,
        status=status,
        created_at=now,
        promoted_at=now if status == "active" else None,
        artifact_uri=artifact_uri,
        sha256=sha256,
        manifest_hash=manifest_hash,
        card=dict(card),
        metrics=dict(metrics),
    )
    session.add(row)
    session.flush()
    return row


def get_model_version(session: Session, *, version: str) -> ModelVersion | None:
    return session.scalars(select(ModelVersion).where(ModelVersion.version == version)).one_or_none()


def get_active_model_version(session: Session) -> ModelVersion | None:
    """The one active model version, or None."""
    return session.scalars(select(ModelVersion).where(ModelVersion.status == "active")).one_or_none()


def list_model_versions(session: Session, *, status: str | None = None) -> list[ModelVersion]:
    """Model versions, oldest first (optionally only those with `status`)."""
    query = select(ModelVersion).order_by(ModelVersion.created_at, ModelVersion.id)
    if status is not None:
        query = query.where(ModelVersion.status == status)
    return list(session.scalars(query))


def _retire_active(session: Session, *, now: dt.datetime, except_version: str) -> None:
    active = get_active_model_version(session)
    if active is not None and active.version != except_version:
        active.status = "retired"
        # Flush now: the partial unique index allows one active row at any moment of the transaction.
        session.flush()


def set_model_status(
    session: Session, *, version: str, status: str, now: dt.datetime, note: str | None = None
) -> ModelVersion:
    """Set a version's status; making one active retires the previously active one."""
    if status not in MODEL_STATUSES:
        raise ValueError(f"status must be one of {MODEL_STATUSES}, got {status!r}")
    row = get_model_version(session, version=version)
    if row is None:
        raise ModelVersionNotFound(f"no model version {version!r}")
    if status == "active":
        _retire_active(session, now=now, except_version=version)
        if row.status != "active":
            row.promoted_at = now
    row.status = status
    if note is not None:
        row.promotion_note = note
    session.flush()
    return row


def activate_model_version(
    session: Session, *, version: str, now: dt.datetime, note: str | None = None
) -> ModelVersion:
    """Make `version` the one active model version."""
    return set_model_status(session, version=version, status="active", now=now, note=note)
