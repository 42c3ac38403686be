"""Release hints: which studies each open association stored, and on its release one hint per study.

Most senders send a study in one association, so its release says the study is probably all
here. The hint (`storage.stream.events.ReleaseHint`) goes on the instances stream keyed by the study, after
the instances that association stored; the worker closes the study after a short grace instead of
the stable-age timer. Only a hint: one that is not published (broker down, listener killed) costs
the study its stable-age wait, nothing more, so a failed publish is logged and never raised.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable

import structlog

from storage.stream.contract import Publisher
from storage.stream.events import ReleaseHint

log = structlog.get_logger(__name__)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ReleaseHints:
    """Studies stored per open association (keyed by any value unique while it is open)."""

    def __init__(
        self, *, publisher: Publisher, topic: str, clock: Callable[[], dt.datetime] = _utc_now
    ) -> None:
        self._publisher = publisher
        self._topic = topic
        self._clock = clock
        self._lock = threading.Lock()  # associations run in threads of their own
        self._carried: dict[int, set[str]] = {}

    def stored(self, association: int, study_instance_uid: str) -> None:
        """An instance of this study was stored (answered success) in `association`."""
        with self._lock:
            self._carried.setdefault(association, set()).add(study_instance_uid)

    def forget(self, association: int) -> None:
        """The association ended without a release (aborted, connection lost): no hint."""
        with self._lock:
            self._carried.pop(association, None)

    def released(self, association: int) -> int:
        """Publish one hint per study the released association stored; the number published."""
        with self._lock:
            studies = self._carried.pop(association, set())
        released_at = self._clock().isoformat()
        published = 0
        for uid in sorted(studies):
            hint = ReleaseHint(study_instance_uid=uid, released_at=released_at)
            try:
                self._publisher.publish(self._topic, hint.key, hint.to_json())
                published += 1
            except Exception as exc:  # noqa: BLE001 - a hint is optional: the stable-age timer covers it
                log.warning("release_hint_not_published", study_instance_uid=uid, error=type(exc).__name__)
        return published
