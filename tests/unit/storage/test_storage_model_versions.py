"""storage.db.model_versions: one active version at a time, promotions recorded, unknown versions refused."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.orm import Session, sessionmaker

from storage.db.model_versions import (
    ModelVersionNotFound,
    activate_model_version,
    get_active_model_version,
    list_model_versions,
    register_model_version,
)

T0 = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


def _register(session: Session, version: str, *, minutes: int = 0) -> None:
    register_model_version(
        session,
        version=version,
        artifact_uri=f"file:///models/{version}",
        sha256="0" * 64,
        card={"version": version},
        metrics={"macro_f1": 0.5},
        manifest_hash=None,
        now=T0 + dt.timedelta(minutes=minutes),
    )


def test_activating_a_version_retires_the_previous_one(sessions: sessionmaker[Session]) -> None:
    """After two promotions exactly one version is active and the first is retired, with its note kept."""
    with sessions.begin() as session:
        _register(session, "v1")
        _register(session, "v2", minutes=1)
        activate_model_version(session, version="v1", now=T0, note="first")
        activate_model_version(session, version="v2", now=T0 + dt.timedelta(minutes=2))
    with sessions() as session:
        statuses = {v.version: v.status for v in list_model_versions(session)}
        active = get_active_model_version(session)
        assert statuses == {"v1": "retired", "v2": "active"}
        assert active is not None and active.version == "v2"
        assert active.promoted_at == T0 + dt.timedelta(minutes=2)
        assert [v.version for v in list_model_versions(session, status="retired")] == ["v1"]


def test_unknown_version_and_status_are_refused(sessions: sessionmaker[Session]) -> None:
    """Activating a version that was never registered, or registering a made-up status, raises."""
    with sessions.begin() as session, pytest.raises(ModelVersionNotFound):
        activate_model_version(session, version="nope", now=T0)
    with sessions.begin() as session, pytest.raises(ValueError, match="status"):
        register_model_version(
            session,
            version="v9",
            artifact_uri="file:///m",
            sha256="0" * 64,
            card={},
            metrics={},
            manifest_hash=None,
            now=T0,
            status="shiny",
        )
