"""`Every`: what the worker does between batches at most once per interval (model polls, sweeps)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Every:
    """`due()` is true at most once per `interval_s` of `clock`; the first call is due."""

    interval_s: float
    clock: Callable[[], float]
    _next: float = field(default=0.0, init=False)

    def due(self) -> bool:
        now = self.clock()
        if now < self._next:
            return False
        self.restart()
        return True

    def restart(self) -> None:
        """Count the interval from now (what was just done need not be done again before it ends)."""
        self._next = self.clock() + self.interval_s
