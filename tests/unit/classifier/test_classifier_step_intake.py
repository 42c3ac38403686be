"""The intake step: every record parsed once into an event, a release hint or poison."""

from __future__ import annotations

from worker_steps_kit import event, record

from classifier.worker.errors import InvalidEventError
from classifier.worker.intake import parse_records


def test_live_and_reprocess_events_are_parsed_once_with_their_version() -> None:
    """Both are instance events; the reprocess one carries its target version in the type."""
    live, again = event(1), event(2, reprocess="v2")
    intake = parse_records([record(0, live.to_json()), record(1, again.to_json())])
    assert [e for _, e in intake.events] == [live, again]
    assert [e.reprocess_model_version for _, e in intake.events] == [None, "v2"]
    assert not intake.invalid and not intake.hints


def test_an_invalid_event_is_poison_without_an_event() -> None:
    """Not JSON, or a UID too long for its column: poison, never decoded, its offset committed with the batch."""
    long_uid = event(3).to_json().replace(b'"1.2.3.1.3"', b'"' + b"1." * 40 + b'"')
    intake = parse_records([record(0, b"not json"), record(1, long_uid), record(2, event(4).to_json())])
    assert [(p.record.offset, p.event) for p in intake.invalid] == [(0, None), (1, None)]
    assert all(isinstance(p.error, InvalidEventError) for p in intake.invalid)
    assert sorted(r.offset for r in intake.records) == [0, 1, 2]
