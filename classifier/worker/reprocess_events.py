"""Reprocess events: an instance event plus the model version it is to be classified under.

`kidneyct reprocess` publishes them on the instances topic (or the embedded queue), keyed by the
study like live events, so workers see them in order with the study's live instances. The field is
an addition to the instance event's JSON: readers that do not know it (the catalogue) see a plain
instance event, whose re-recording as `received` changes nothing.
"""

from __future__ import annotations

import json
from typing import Any

from storage.stream.contract import Record
from storage.stream.events import InstanceEvent

REPROCESS_FIELD = "reprocess_model_version"


def reprocess_event(event: InstanceEvent, *, model_version: str) -> bytes:
    """The event's JSON with the model version the worker is to classify it under."""
    data: dict[str, Any] = json.loads(event.to_json())
    data[REPROCESS_FIELD] = model_version
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def target_version(record: Record) -> str | None:
    """The model version a reprocess event asks for; None for a live event (or one that is not JSON,
    which the decoder turns into a dead letter)."""
    try:
        data = json.loads(record.value)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    value = data.get(REPROCESS_FIELD) if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None


def is_reprocess(record: Record) -> bool:
    return target_version(record) is not None
