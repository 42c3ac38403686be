"""The intake step: each record parsed once into what it is, before anything else reads it.

An instance event (live or reprocess: `InstanceEvent.reprocess_model_version`), a release hint, or
poison (not a valid instance event: dead-lettered and committed past, never decoded).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from classifier.worker.decoding import PoisonInstance, parse_event
from classifier.worker.errors import InvalidEventError
from storage.stream.contract import Record
from storage.stream.events import InstanceEvent, ReleaseHint


@dataclass
class Intake:
    events: list[tuple[Record, InstanceEvent]] = field(default_factory=list)
    invalid: list[PoisonInstance] = field(default_factory=list)
    hints: list[tuple[Record, ReleaseHint]] = field(default_factory=list)

    @property
    def records(self) -> list[Record]:
        """The records that are not hints: their offsets are committed with the batch's rows."""
        return [r for r, _ in self.events] + [p.record for p in self.invalid]


def parse_records(records: Sequence[Record]) -> Intake:
    intake = Intake()
    for record in records:
        hint = ReleaseHint.of_message(record.value)
        if hint is not None:
            intake.hints.append((record, hint))
            continue
        try:
            intake.events.append((record, parse_event(record)))
        except InvalidEventError as exc:
            intake.invalid.append(PoisonInstance(record, None, exc))
    return intake
