"""Release hints the worker has read: study -> when the association that carried it was released.

Kept in memory only: a hint is an optimisation, so one lost with a restart (or never published)
leaves the study to the stable-age timer. Used by the worker's thread alone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from storage.stream.events import ReleaseHint


class ReleasedStudies:
    """Release times by Study Instance UID; a hint older than `keep_s` is dropped (the timer has it)."""

    def __init__(self, *, keep_s: float) -> None:
        self._keep = dt.timedelta(seconds=keep_s)
        self._released: dict[str, dt.datetime] = {}

    def __len__(self) -> int:
        return len(self._released)

    def note(self, hints: Iterable[ReleaseHint]) -> None:
        for hint in hints:
            try:
                at = dt.datetime.fromisoformat(hint.released_at)
            except ValueError:
                continue  # not a time: ignore the hint, the timer decides
            if at.tzinfo is None:
                continue
            previous = self._released.get(hint.study_instance_uid)
            self._released[hint.study_instance_uid] = at if previous is None else max(previous, at)

    def released_at(self, study_instance_uid: str) -> dt.datetime | None:
        return self._released.get(study_instance_uid)

    def forget(self, study_instance_uid: str) -> None:
        self._released.pop(study_instance_uid, None)

    def expire(self, now: dt.datetime) -> None:
        """Drop hints older than `keep_s`: their studies are the stable-age timer's by then."""
        cutoff = now - self._keep
        for uid in [u for u, at in self._released.items() if at < cutoff]:
            del self._released[uid]
