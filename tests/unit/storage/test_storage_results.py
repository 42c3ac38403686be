"""storage.db.results: idempotent upserts of studies, series and instances, and the completion check."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from storage.db.model_versions import register_model_version
from storage.db.results import (
    InstanceRow,
    SeriesRow,
    StudyRow,
    incomplete_studies,
    mark_study_complete,
    upsert_instances,
    upsert_series,
    upsert_studies,
)
from storage.db.tables import Instance, Study, StudyPrediction
from storage.stream.events import InstanceEvent

T0 = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)


def _event(sop: str = "1.2.3.1", *, instance_number: int | None = 7) -> InstanceEvent:
    return InstanceEvent(
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.0",
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        modality="CT",
        archive_uri=f"file:///archive/{sop}.dcm",
        sha256="ab" * 32,
        size_bytes=1234,
        calling_ae="SCU",
        received_at=T0,
        instance_number=instance_number,
        number_of_frames=1,
    )


def _write(session: Session, rows: list[InstanceRow], *, now: dt.datetime = T0) -> dict[str, int]:
    study_ids = upsert_studies(session, studies=[StudyRow("1.2.3", None, T0)])
    series_ids = upsert_series(session, series=[SeriesRow("1.2.3.0", "1.2.3", "CT")], study_ids=study_ids)
    return upsert_instances(session, instances=rows, series_ids=series_ids, now=now)


def _state(sessions: sessionmaker[Session], sop: str) -> tuple[str, str | None]:
    with sessions() as session:
        row = session.scalars(select(Instance).where(Instance.sop_instance_uid == sop)).one()
        return row.state, row.state_reason


def test_instance_row_of_event_copies_the_event_and_drops_a_non_integer_number() -> None:
    """The row carries the event's UIDs and file facts; an InstanceNumber that is not an int is stored as none."""
    row = InstanceRow.of_event(_event(), received_at=T0, state="received", frames=1)
    assert (row.sop_instance_uid, row.series_instance_uid, row.sha256) == ("1.2.3.1", "1.2.3.0", "ab" * 32)
    assert row.instance_number == 7 and row.state_reason is None
    odd = InstanceRow.of_event(
        _event(instance_number="7a"),  # type: ignore[arg-type]  # what a malformed event may carry
        received_at=T0,
        state="failed",
        frames=1,
        reason="ValueDoesNotFit",
    )
    assert odd.instance_number is None and odd.state_reason == "ValueDoesNotFit"


def test_upsert_studies_keeps_the_earliest_and_latest_receipt(sessions: sessionmaker[Session]) -> None:
    """A study seen again keeps one row; first/last received widen, a known accession is not erased."""
    later = T0 + dt.timedelta(minutes=5)
    with sessions.begin() as session:
        first = upsert_studies(session, studies=[StudyRow("1.2.3", "ACC1", T0)])
        again = upsert_studies(session, studies=[StudyRow("1.2.3", None, later)])
    assert first == again
    with sessions() as session:
        study = session.scalars(select(Study)).one()
        assert study.accession_number == "ACC1"
        assert study.first_received_at.replace(tzinfo=dt.UTC) == T0
        assert study.last_received_at.replace(tzinfo=dt.UTC) == later


def test_a_failed_redelivery_never_overwrites_processed(sessions: sessionmaker[Session]) -> None:
    """processed stays processed when the same instance later fails; re-delivery adds no row."""
    with sessions.begin() as session:
        _write(session, [InstanceRow.of_event(_event(), received_at=T0, state="processed", frames=1)])
    with sessions.begin() as session:
        _write(
            session,
            [InstanceRow.of_event(_event(), received_at=T0, state="failed", frames=1, reason="DecodeError")],
        )
    assert _state(sessions, "1.2.3.1") == ("processed", None)
    with sessions() as session:
        assert len(session.scalars(select(Instance)).all()) == 1


def test_the_catalogue_row_never_overwrites_a_worker_state(sessions: sessionmaker[Session]) -> None:
    """`received` written after `failed` leaves `failed`; `processed` after `received` wins."""
    with sessions.begin() as session:
        _write(
            session,
            [InstanceRow.of_event(_event(), received_at=T0, state="failed", frames=1, reason="DecodeError")],
        )
        _write(session, [InstanceRow.of_event(_event(), received_at=T0, state="received", frames=1)])
    assert _state(sessions, "1.2.3.1") == ("failed", "DecodeError")
    with sessions.begin() as session:
        _write(session, [InstanceRow.of_event(_event("1.2.3.2"), received_at=T0, state="received", frames=1)])
        _write(
            session, [InstanceRow.of_event(_event("1.2.3.2"), received_at=T0, state="processed", frames=1)]
        )
    assert _state(sessions, "1.2.3.2") == ("processed", None)


def _open_study_result(sessions: sessionmaker[Session], *, updated_at: dt.datetime) -> int:
    with sessions.begin() as session:
        _write(session, [InstanceRow.of_event(_event(), received_at=T0, state="processed", frames=1)])
        model = register_model_version(
            session,
            version="v1",
            artifact_uri="file:///m",
            sha256="0" * 64,
            card={},
            metrics={},
            manifest_hash=None,
            now=T0,
        )
        study = session.scalars(select(Study)).one()
        result = StudyPrediction(
            study_id=study.id,
            model_version_id=model.id,
            label="Cyst",
            p_cyst=0.7,
            p_normal=0.1,
            p_stone=0.1,
            p_tumor=0.1,
            n_cyst=1,
            n_normal=0,
            n_stone=0,
            n_tumor=0,
            n_instances=1,
            complete=False,
            updated_at=updated_at,
        )
        session.add(result)
        session.flush()
        return result.id


def test_a_quiet_study_is_listed_then_marked_complete_once(sessions: sessionmaker[Session]) -> None:
    """A study idle since the cutoff is listed; marking it succeeds once and it is listed no more."""
    result_id = _open_study_result(sessions, updated_at=T0)
    cutoff = T0 + dt.timedelta(seconds=30)
    with sessions() as session:
        assert incomplete_studies(session, cutoff=T0 - dt.timedelta(seconds=1)) == []
        (open_study,) = incomplete_studies(session, cutoff=cutoff)
    with sessions.begin() as session:
        marked = mark_study_complete(
            session, study_prediction_id=result_id, expected_updated_at=open_study.updated_at, now=cutoff
        )
        again = mark_study_complete(
            session, study_prediction_id=result_id, expected_updated_at=open_study.updated_at, now=cutoff
        )
    assert (marked, again) == (True, False)
    with sessions() as session:
        assert incomplete_studies(session, cutoff=cutoff) == []


def test_a_recompute_in_between_keeps_the_study_open(sessions: sessionmaker[Session]) -> None:
    """Marking with a stale `updated_at` (the result was recomputed since it was read) changes nothing."""
    result_id = _open_study_result(sessions, updated_at=T0 + dt.timedelta(seconds=10))
    with sessions.begin() as session:
        marked = mark_study_complete(
            session, study_prediction_id=result_id, expected_updated_at=T0, now=T0 + dt.timedelta(minutes=1)
        )
    assert marked is False
    with sessions() as session:
        assert session.get(StudyPrediction, result_id).complete is False  # type: ignore[union-attr]
