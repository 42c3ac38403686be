"""The instance event on the wire: parsed once into a typed event, backward compatible both ways."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from storage.stream.events import InstanceEvent, InvalidEvent

T0 = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)

# An event as listeners before the typed `received_at` and the reprocess field published it.
OLD_WIRE = (
    b'{"archive_uri":"file:///a/1.dcm","calling_ae":"SCU","instance_number":1,"modality":"CT",'
    b'"number_of_frames":1,"received_at":"2026-12-06T12:00:00+00:00","schema_version":1,'
    b'"series_instance_uid":"1.2.3.4","sha256":"' + b"0" * 64 + b'","size_bytes":10,'
    b'"sop_class_uid":"1.2.840.10008.5.1.4.1.1.2","sop_instance_uid":"1.2.3.4.5",'
    b'"study_instance_uid":"1.2.3","transfer_syntax_uid":"1.2.840.10008.1.2.1"}'
)


def test_an_old_event_parses_and_serialises_to_the_same_bytes() -> None:
    """Without the new field it is a live event, received_at an aware UTC datetime; its JSON is unchanged."""
    event = InstanceEvent.from_json(OLD_WIRE)
    assert event.received_at == T0 and event.received_at.tzinfo is not None
    assert event.reprocess_model_version is None and not event.is_reprocess
    assert event.to_json() == OLD_WIRE


def test_received_at_is_utc_whatever_the_offset_or_none() -> None:
    """An offset is converted to UTC; a naive time is taken as UTC (on the wire and in code)."""
    data = json.loads(OLD_WIRE)
    data["received_at"] = "2026-12-06T13:00:00+01:00"
    assert InstanceEvent.from_json(json.dumps(data).encode()).received_at == T0
    data["received_at"] = "2026-12-06T12:00:00"
    parsed = InstanceEvent.from_json(json.dumps(data).encode())
    assert parsed.received_at == T0
    naive = InstanceEvent.from_json(OLD_WIRE).__class__(
        **{**json.loads(OLD_WIRE), "received_at": dt.datetime(2026, 12, 6, 12, 0)}
    )
    assert naive.received_at == T0


@pytest.mark.parametrize("value", ["yesterday", 17, None])
def test_a_received_at_that_is_not_a_time_is_invalid(value: object) -> None:
    """Not ISO 8601 (or not a string): an invalid event, poison for the worker."""
    data = {**json.loads(OLD_WIRE), "received_at": value}
    with pytest.raises(InvalidEvent, match="received_at"):
        InstanceEvent.from_json(json.dumps(data).encode())


def test_a_reprocess_event_carries_its_version_and_a_bad_one_is_invalid() -> None:
    """The version is part of the type; an empty or non-string version is an invalid event."""
    event = InstanceEvent.from_json(OLD_WIRE).reprocessed_under("v2")
    parsed = InstanceEvent.from_json(event.to_json())
    assert parsed == event and parsed.reprocess_model_version == "v2" and parsed.is_reprocess
    for bad in ("", 3):
        data = {**json.loads(OLD_WIRE), "reprocess_model_version": bad}
        with pytest.raises(InvalidEvent, match="reprocess_model_version"):
            InstanceEvent.from_json(json.dumps(data).encode())
