"""The write step on SQLite: one transaction per batch; refused on the data, one by one, the event that
does not fit becoming poison; each poison event logged once; a reused UID left out of what is published."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from structlog.testing import capture_logs
from worker_steps_kit import T0, decoded, event, metrics, record, serving

import migrations
from classifier.study.policy import PolicySettings
from classifier.study.rule import StudyRule
from classifier.worker.decoding import PoisonInstance
from classifier.worker.errors import DecodeError, ValueDoesNotFit
from classifier.worker.predict import Predicted
from classifier.worker.retrying import Retry
from classifier.worker.write_step import WriteBatch
from storage.db.engine import make_engine, make_session_factory
from storage.db.model_versions import activate_model_version, register_model_version
from storage.db.tables import Instance, Prediction
from storage.failures import Backoff

PROBS = np.array([[0.1, 0.7, 0.1, 0.1]])


@pytest.fixture
def sessions(sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    migrations.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    factory = make_session_factory(engine)
    with factory.begin() as s:
        register_model_version(
            s, version="v1", artifact_uri="-", sha256="-", card={}, metrics={}, manifest_hash=None, now=T0
        )
        activate_model_version(s, version="v1", now=T0)
    yield factory
    engine.dispose()


def _step(sessions: sessionmaker[Session]) -> WriteBatch:
    retry = Retry(stop=threading.Event(), backoff=Backoff(0.01, 0.01), metrics=metrics())
    return WriteBatch(
        sessions=sessions,
        retry=retry,
        policy=PolicySettings(fallback=StudyRule(1, 0.0), override=False, max_shifted_fraction=1.0),
        utcnow=lambda: T0,
    )


def _states(sessions: sessionmaker[Session]) -> dict[str, str]:
    with sessions() as s:
        return {uid: state for uid, state in s.execute(select(Instance.sop_instance_uid, Instance.state))}


def test_a_batch_is_written_in_one_go_and_its_poison_recorded(sessions: sessionmaker[Session]) -> None:
    """Predicted instances processed with their rows, a poison event failed; each poison logged once."""
    good = [Predicted(decoded(n), PROBS) for n in (1, 2)]
    poison = PoisonInstance(record(3, b""), event(3), DecodeError("bad pixels"))
    with capture_logs() as logs:
        written = _step(sessions)(serving(), good, [poison])
    assert written.predicted == good and written.poisoned == [poison] and written.new_rows == 2
    assert _states(sessions) == {"1.2.3.1.1": "processed", "1.2.3.1.2": "processed", "1.2.3.1.3": "failed"}
    assert [e["sop_instance_uid"] for e in logs if e["event"] == "instance_poisoned"] == ["1.2.3.1.3"]


def test_refused_on_the_data_the_batch_is_written_one_by_one(sessions: sessionmaker[Session]) -> None:
    """An InstanceNumber beyond 64 bits: that event becomes ValueDoesNotFit poison, recorded without the
    value; the others are processed; the poison logged once, not once per attempt."""
    bad_instance = dataclasses.replace(decoded(2), event=dataclasses.replace(event(2), instance_number=2**70))
    batch = [Predicted(decoded(1), PROBS), Predicted(bad_instance, PROBS), Predicted(decoded(3), PROBS)]
    with capture_logs() as logs:
        written = _step(sessions)(serving(), batch, [])
    assert [p.instance.event.instance_number for p in written.predicted] == [1, 3]
    [poison] = written.poisoned
    assert isinstance(poison.error, ValueDoesNotFit) and written.new_rows == 2
    assert _states(sessions) == {"1.2.3.1.1": "processed", "1.2.3.1.2": "failed", "1.2.3.1.3": "processed"}
    assert [e["event"] for e in logs].count("instance_poisoned") == 1
    assert [e["event"] for e in logs].count("batch_write_refused_data") == 1


def test_a_reused_uid_is_left_out_of_what_is_written_and_published(sessions: sessionmaker[Session]) -> None:
    """The same SOP Instance UID in a second study: checked once, in the batch's transaction; the
    first study keeps it and the second is neither written nor handed on to be published."""
    first = Predicted(decoded(1, study="1.2.3"), PROBS)
    other = decoded(1, study="1.2.4")
    reused = Predicted(
        dataclasses.replace(other, event=dataclasses.replace(other.event, sop_instance_uid="1.2.3.1.1")),
        PROBS,
    )
    step = _step(sessions)
    step(serving(), [first], [])
    with capture_logs() as logs:
        written = step(serving(), [reused], [])
    assert written.predicted == [] and written.new_rows == 0
    assert [e["action"] for e in logs if e["event"] == "instance_uid_conflict"] == ["not_classified"]
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Prediction)) == 1
