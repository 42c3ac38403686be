"""What `kidneyct reprocess` selects from the catalogue, and how it reads times and durations."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

import migrations
from ingest.catalog import record_events
from kidneyct.reprocess.queue import ReprocessError, parse_duration, parse_when, queue_reprocess
from kidneyct.settings import Settings
from storage.db.engine import make_engine, make_session_factory
from storage.db.model_versions import register_model_version
from storage.db.reprocess import Selection, count_selected, select_for_reprocess
from storage.db.results import PredictionRow, insert_predictions
from storage.db.tables import Instance, QueueMessage
from storage.stream.events import InstanceEvent

T0 = dt.datetime(2026, 11, 1, 8, 0, tzinfo=dt.UTC)


def _event(study: str, sop: str, received: dt.datetime, modality: str = "CT") -> InstanceEvent:
    return InstanceEvent(
        study_instance_uid=study,
        series_instance_uid=f"{study}.1",
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        modality=modality,
        archive_uri=f"file:///archive/{sop}.dcm",
        sha256="0" * 64,
        size_bytes=10,
        calling_ae="SCU",
        received_at=received,
        instance_number=1,
        number_of_frames=1,
    )


@pytest.fixture
def sessions(sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    migrations.upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    factory = make_session_factory(engine)
    with factory.begin() as s:
        record_events(
            s,
            events=[
                _event("1.1", "1.1.1.1", T0),
                _event("1.1", "1.1.1.2", T0 + dt.timedelta(minutes=5)),
                _event("1.2", "1.2.1.1", T0 + dt.timedelta(days=3)),
                _event("1.3", "1.3.1.1", T0 + dt.timedelta(days=6)),
            ],
            now=T0,
        )
        s.execute(
            Instance.__table__.update().where(Instance.sop_instance_uid == "1.3.1.1").values(state="skipped")
        )
        s.execute(
            Instance.__table__.update()
            .where(Instance.sop_instance_uid.like("1.1.%"))
            .values(state="processed")
        )
        from storage.db.tables import Study

        s.execute(
            Study.__table__.update().where(Study.study_instance_uid == "1.2").values(accession_number="ACC2")
        )
        for v in ("A", "B"):
            register_model_version(
                s,
                version=v,
                artifact_uri="/x",
                sha256="0" * 64,
                card={},
                metrics={},
                manifest_hash=None,
                now=T0,
            )
    yield factory
    engine.dispose()


def _classify(session: Session, sop_instance_uid: str, *, model_version_id: int) -> None:
    """One prediction row of the version for the instance (frame 0)."""
    ids = {i.sop_instance_uid: i.id for i in session.query(Instance)}
    insert_predictions(
        session,
        predictions=[PredictionRow(sop_instance_uid, 0, "Normal", (0.1, 0.7, 0.1, 0.1))],
        instance_ids=ids,
        model_version_id=model_version_id,
        now=T0,
    )


def _select(sessions: sessionmaker[Session], selection: Selection, version_id: int = 2) -> list[str]:
    with sessions() as s:
        return [
            e.sop_instance_uid
            for e in select_for_reprocess(s, selection=selection, model_version_id=version_id).events
        ]


def test_selection_by_study_accession_time_and_all(sessions: sessionmaker[Session]) -> None:
    """Each filter selects its instances; skipped (non-CT) instances are never selected."""
    assert _select(sessions, Selection(study_uids=("1.1",))) == ["1.1.1.1", "1.1.1.2"]
    assert _select(sessions, Selection(accession_numbers=("ACC2",))) == ["1.2.1.1"]
    assert _select(sessions, Selection(received_since=T0 + dt.timedelta(days=1))) == ["1.2.1.1"]
    assert _select(sessions, Selection(received_until=T0 + dt.timedelta(days=1))) == ["1.1.1.1", "1.1.1.2"]
    assert _select(sessions, Selection(everything=True)) == ["1.1.1.1", "1.1.1.2", "1.2.1.1"]
    with pytest.raises(ValueError, match="nothing selected"):
        _select(sessions, Selection())


def test_instances_the_version_classified_are_counted_not_selected(sessions: sessionmaker[Session]) -> None:
    """An instance with a prediction of the target version is left out and counted as already done."""
    with sessions.begin() as s:
        _classify(s, "1.1.1.1", model_version_id=2)
    with sessions() as s:
        got = select_for_reprocess(s, selection=Selection(everything=True), model_version_id=2)
        other = select_for_reprocess(s, selection=Selection(everything=True), model_version_id=1)
    assert [e.sop_instance_uid for e in got.events] == ["1.1.1.2", "1.2.1.1"] and got.already_done == 1
    assert len(other.events) == 3 and other.already_done == 0


def test_pages_read_exactly_what_one_read_does_ties_included(sessions: sessionmaker[Session]) -> None:
    """Keyset pages of one row, over instances received at the same instant too: the same events in the
    same order, none twice, and the classified ones counted once."""
    with sessions.begin() as s:
        same = T0 + dt.timedelta(days=8)
        record_events(s, events=[_event("1.4", "1.4.1.1", same), _event("1.4", "1.4.1.2", same)], now=T0)
        _classify(s, "1.1.1.2", model_version_id=2)
    everything = Selection(everything=True)
    with sessions() as s:
        whole = select_for_reprocess(s, selection=everything, model_version_id=2)
        pages, after = [], None
        while (
            page := select_for_reprocess(s, selection=everything, model_version_id=2, after=after, limit=1)
        ).last:
            pages.append(page)
            after = page.last
        total = count_selected(s, selection=everything)
    assert [e.sop_instance_uid for e in whole.events] == ["1.1.1.1", "1.2.1.1", "1.4.1.1", "1.4.1.2"]
    assert [e for p in pages for e in p.events] == whole.events
    assert len(pages) == total == 5 and sum(p.already_done for p in pages) == whole.already_done == 1


def test_queue_reprocess_publishes_every_page_once_with_progress_to_the_total(
    sessions: sessionmaker[Session], sqlite_url: str, tmp_path: Path
) -> None:
    """Pages of two rows on the embedded queue: every unclassified instance queued once, in receipt
    order, for the named version; the progress bar ends at the selection's size."""
    settings = Settings(database_url=sqlite_url, data_dir=tmp_path)
    calls: list[tuple[int, int]] = []
    queued = queue_reprocess(
        settings,
        sessions,
        selection=Selection(everything=True),
        model_version="B",
        progress=lambda done, total: calls.append((done, total)),
        page_rows=2,
    )
    with sessions() as s:
        values = [m.value for m in s.query(QueueMessage).order_by(QueueMessage.id)]
    events = [InstanceEvent.from_json(v) for v in values]
    assert [e.sop_instance_uid for e in events] == ["1.1.1.1", "1.1.1.2", "1.2.1.1"]
    assert {e.reprocess_model_version for e in events} == {"B"}
    assert (queued.instances, queued.studies, queued.already_done) == (3, 2, 0)
    assert calls[-1] == (3, 3) and all(done <= total for done, total in calls)


def test_reprocess_event_is_an_instance_event_with_a_version() -> None:
    """A reprocess event is the instance event plus the version; a live event's JSON has no such field."""
    event = _event("1.1", "1.1.1.9", T0)
    value = event.reprocessed_under("B").to_json()
    assert json.loads(value)["reprocess_model_version"] == "B"
    parsed = InstanceEvent.from_json(value)
    assert parsed.reprocess_model_version == "B" and parsed.is_reprocess
    assert dataclasses.replace(parsed, reprocess_model_version=None) == event
    assert "reprocess_model_version" not in json.loads(event.to_json())
    assert not InstanceEvent.from_json(event.to_json()).is_reprocess


def test_times_and_durations() -> None:
    """Durations back from now, ISO dates and times (UTC unless they say otherwise), clear refusals."""
    now = dt.datetime(2026, 11, 29, 12, 0, tzinfo=dt.UTC)
    assert parse_duration("7d") == dt.timedelta(days=7)
    assert parse_duration("36h") == dt.timedelta(hours=36)
    assert parse_when("2w", now=now) == now - dt.timedelta(weeks=2)
    assert parse_when("2026-11-01", now=now) == dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    assert parse_when("2026-11-01T08:00+01:00", now=now) == dt.datetime(2026, 11, 1, 7, 0, tzinfo=dt.UTC)
    with pytest.raises(ReprocessError, match="not a time"):
        parse_when("yesterday", now=now)
    with pytest.raises(ReprocessError, match="not a duration"):
        parse_duration("7 days")
