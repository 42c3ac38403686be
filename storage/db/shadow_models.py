"""Data access for shadow models: candidate versions that workers run beside the active model.

Keyword-only functions that never commit: the caller owns the transaction.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.db.model_versions import ModelVersionNotFound, get_model_version
from storage.db.tables import ModelVersion


class ShadowRefused(ValueError):
    """The version cannot be a shadow (it is the active one)."""


def set_shadow(session: Session, *, version: str, on: bool) -> ModelVersion:
    """Turn shadowing of `version` on or off; the active version cannot be its own shadow."""
    row = get_model_version(session, version=version)
    if row is None:
        raise ModelVersionNotFound(f"no model version {version!r}")
    if on and row.status == "active":
        raise ShadowRefused(f"{version} is the active model version: it already sees every instance")
    row.shadow = on
    session.flush()
    return row


def shadow_versions(session: Session) -> list[ModelVersion]:
    """The versions workers run as shadows (never the active one), oldest first."""
    return list(
        session.scalars(
            select(ModelVersion)
            .where(ModelVersion.shadow.is_(True), ModelVersion.status != "active")
            .order_by(ModelVersion.created_at, ModelVersion.id)
        )
    )
