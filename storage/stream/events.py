"""The instance event: a versioned JSON document, one per received instance.

It carries UIDs and technical attributes only, never patient-identifying data. Consumers read
what they need beyond this (AccessionNumber, pixels) from the archived file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

SCHEMA_VERSION = 1


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
    received_at: str  # ISO 8601, UTC
    instance_number: int | None
    number_of_frames: int
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode()

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
        missing = names - data.keys() - {"schema_version"}
        if missing:
            raise InvalidEvent(f"missing fields: {sorted(missing)}")
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as exc:
            raise InvalidEvent(str(exc)) from exc


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
