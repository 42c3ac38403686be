"""The active model beside the pipeline: loaded at start, switched when another is promoted, kept
when the promoted one cannot be loaded."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker
from structlog.testing import capture_logs
from worker_steps_kit import T0, metrics, serving

import migrations
from classifier.model.serving import ServingModel
from classifier.worker.active_model import ActiveModel
from classifier.worker.errors import ArtifactError, NoActiveModel
from classifier.worker.every import Every
from classifier.worker.retrying import Retry
from storage.db.engine import make_engine, make_session_factory
from storage.db.model_versions import activate_model_version, register_model_version
from storage.db.tables import ModelVersion
from storage.failures import Backoff


@pytest.fixture
def sessions(sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    migrations.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    factory = make_session_factory(engine)
    with factory.begin() as s:
        for version in ("v1", "v2", "broken"):
            register_model_version(
                s,
                version=version,
                artifact_uri="-",
                sha256="-",
                card={},
                metrics={},
                manifest_hash=None,
                now=T0,
            )
    yield factory
    engine.dispose()


def _load(row: ModelVersion) -> ServingModel:
    if row.version == "broken":
        raise ArtifactError("weights do not match their sha256")
    return serving(row.version, model_version_id=row.id)


def _active(sessions: sessionmaker[Session]) -> ActiveModel:
    stop = threading.Event()
    m = metrics()
    return ActiveModel(
        sessions=sessions,
        load_model=_load,
        metrics=m,
        retry=Retry(stop=stop, backoff=Backoff(0.01, 0.01), metrics=m),
        poll=Every(0.0, lambda: 0.0),
    )


def _promote(sessions: sessionmaker[Session], version: str) -> None:
    with sessions.begin() as s:
        activate_model_version(s, version=version, now=T0)


def test_no_active_version_is_no_model(sessions: sessionmaker[Session]) -> None:
    active = _active(sessions)
    with pytest.raises(NoActiveModel):
        active.start()
    assert not active.loaded and active.serving_or_none is None


def test_a_promoted_version_is_switched_to_and_a_broken_one_refused(sessions: sessionmaker[Session]) -> None:
    """v1 at start; v2 once promoted; a promoted version that cannot be loaded leaves v2 serving."""
    _promote(sessions, "v1")
    active = _active(sessions)
    assert active.start().version == "v1"
    active.maybe_switch()
    assert active.serving.version == "v1"
    _promote(sessions, "v2")
    active.maybe_switch()
    assert active.serving.version == "v2"
    _promote(sessions, "broken")
    with capture_logs() as logs:
        active.maybe_switch()
    assert active.serving.version == "v2"
    assert [e["event"] for e in logs] == ["model_switch_refused"]
