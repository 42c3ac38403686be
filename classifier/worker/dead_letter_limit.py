"""Stop instead of dead-lettering everything when the archive is unreadable (as Sentry's arroyo
does with its DLQ limit): a worker whose archive volume is not mounted would otherwise mark every
instance failed and commit past it. `DeadLetterLimit` is pure: fed outcomes, it says whether to stop."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence

import structlog

from classifier.worker.decoding import Outcome, PoisonInstance
from classifier.worker.errors import ArchiveFileMissing, DeadLetterLimitExceeded

log = structlog.get_logger(__name__)


class DeadLetterLimit:
    """Trips when at least `ratio` of the last `window` events could not read their archive file."""

    def __init__(self, *, window: int, ratio: float) -> None:
        self.window = window
        self.ratio = ratio
        self._recent: deque[bool] = deque(maxlen=max(window, 1))

    def observe(self, unreadable: Iterable[bool]) -> None:
        self._recent.extend(unreadable)

    @property
    def unreadable(self) -> int:
        return sum(self._recent)

    @property
    def tripped(self) -> bool:
        if self.window <= 0:
            return False  # turned off
        return self.unreadable >= max(math.ceil(self.window * self.ratio), 1)


def stop_if_archive_unreadable(limit: DeadLetterLimit, outcomes: Sequence[Outcome], *, archive: str) -> None:
    """Observe a batch's outcomes; `DeadLetterLimitExceeded` (before anything of it is written or
    committed) once the limit trips. `archive`: where the files are read from, for the message."""
    limit.observe(isinstance(o, PoisonInstance) and isinstance(o.error, ArchiveFileMissing) for o in outcomes)
    if not limit.tripped:
        return
    log.error("dead_letter_limit_exceeded", unreadable=limit.unreadable, window=limit.window)
    raise DeadLetterLimitExceeded(
        f"{limit.unreadable} of the last {limit.window} events could not read their archived file from "
        f"{archive}: is the archive mounted (or the object store reachable) and readable? Stopping "
        "without committing this batch (it is delivered again after a restart)."
    )
