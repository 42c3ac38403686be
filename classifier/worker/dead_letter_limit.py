"""Stop instead of dead-lettering everything when the archive is unreadable (as Sentry's arroyo
does with its DLQ limit): a worker whose archive volume is not mounted would otherwise mark every
instance failed and commit past it. Pure: fed outcomes, it says whether to stop."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable


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
