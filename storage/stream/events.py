"""The instance event: a versioned JSON document, one per received instance.

It carries UIDs and technical attributes only, never patient-identifying data. Consumers read
what they need beyond this (AccessionNumber, pixels) from the archived file.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

SCHEMA_VERSION = 1
# Optional fields: absent from the JSON when None, so a live event's JSON is what it always was.
_OPTIONAL = ("reprocess_model_version",)


class InvalidEvent(ValueError):
    """A message that is not a valid instance event: poison, never retried."""


@dataclass(frozen=True, slots=True)
class InstanceEvent:
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str | None
    archive_uri: str
    sha256: str
    size_bytes: int
    calling_ae: str | None
    received_at: dt.datetime  # timezone-aware, UTC (a naive one is taken as UTC); ISO 8601 on the wire
    instance_number: int | None
    number_of_frames: int
    schema_version: int = SCHEMA_VERSION
    # A reprocess event (`kidneyct reprocess`): the model version to classify it under; None: live.
    reprocess_model_version: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "received_at", as_utc(self.received_at))

    def to_json(self) -> bytes:
        data = asdict(self)
        data["received_at"] = self.received_at.isoformat()
        for name in _OPTIONAL:
            if data[name] is None:
                del data[name]
        return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()

    @property
    def is_reprocess(self) -> bool:
        return self.reprocess_model_version is not None

    def reprocessed_under(self, model_version: str) -> InstanceEvent:
        """This event as a reprocess event: to be classified under `model_version`. Readers that do
        not know the field (older catalogues) see a plain instance event, and re-recording it as
        `received` changes nothing."""
        return replace(self, reprocess_model_version=model_version)

    @property
    def key(self) -> bytes:
        """The stream key: one study stays in order on one partition."""
        return self.study_instance_uid.encode()

    @classmethod
    def from_json(cls, raw: bytes) -> InstanceEvent:
        try:
            data: Any = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidEvent(f"not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidEvent("not a JSON object")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise InvalidEvent(f"unsupported schema_version {data.get('schema_version')!r}")
        names = {f.name for f in fields(cls)}
        missing = names - data.keys() - {"schema_version", *_OPTIONAL}
        if missing:
            raise InvalidEvent(f"missing fields: {sorted(missing)}")
        values = {k: v for k, v in data.items() if k in names}
        values["received_at"] = _parse_time(values["received_at"])
        target = values.get("reprocess_model_version")
        if target is not None and not (isinstance(target, str) and target):
            raise InvalidEvent("reprocess_model_version is not a version name")
        try:
            return cls(**values)
        except TypeError as exc:
            raise InvalidEvent(str(exc)) from exc


def as_utc(value: dt.datetime) -> dt.datetime:
    """`value` in UTC; a naive datetime is taken as UTC."""
    if not isinstance(value, dt.datetime):
        raise TypeError(f"not a datetime: {type(value).__name__}")
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _parse_time(value: object) -> dt.datetime:
    try:
        return as_utc(dt.datetime.fromisoformat(value))  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(f"received_at is not an ISO 8601 time: {value!r}") from exc


RELEASE_HINT_KIND = "association_released"


@dataclass(frozen=True, slots=True)
class ReleaseHint:
    """An association that stored instances of this study was released: the study may be complete.

    Published by the listener on the instances stream, keyed by the study like its instances, so a
    consumer reads it after the instances that association stored. Only a hint: a consumer that
    misses it (or ignores it) falls back to the study's stable-age timer. UIDs and a time only.
    """

    study_instance_uid: str
    released_at: str  # ISO 8601, UTC, the listener's clock (as the instance events' received_at)
    kind: str = RELEASE_HINT_KIND
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode()

    @property
    def key(self) -> bytes:
        return self.study_instance_uid.encode()

    @classmethod
    def of_message(cls, raw: bytes) -> ReleaseHint | None:
        """The hint `raw` is, or None for any other message (instance events, reprocess events, junk)."""
        if RELEASE_HINT_KIND.encode() not in raw:  # cheap: most messages are instance events
            return None
        try:
            data: Any = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
        if not isinstance(data, dict) or data.get("kind") != RELEASE_HINT_KIND:
            return None
        uid, released_at = data.get("study_instance_uid"), data.get("released_at")
        if not isinstance(uid, str) or not uid or not isinstance(released_at, str):
            return None
        return cls(study_instance_uid=uid, released_at=released_at)
