"""Progress bars for long, silent steps (loading and de-duplicating images, importing a folder).

Shown on a terminal, or when asked with `--progress`; never mixed into JSON log lines. Code
that does the work takes a plain callback `(done, total)` per stage and knows nothing of bars.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# (done, total) of one stage.
Advance = Callable[[int, int], None]
# A stage's description -> its callback.
Stages = Callable[[str], Advance]


def progress_wanted(flag: bool | None, *, log_format: str, stream: TextIO | None = None) -> bool:
    """`--progress/--no-progress` decides; by default only on a terminal and not with JSON logs."""
    if flag is not None:
        return flag
    stream = stream if stream is not None else sys.stderr
    return stream.isatty() and log_format != "json"


def _silent(_description: str) -> Advance:
    return lambda _done, _total: None


@contextmanager
def progress_bars(enabled: bool, *, stream: TextIO | None = None) -> Iterator[Stages]:
    """Yield `stage(description)`, which returns the `(done, total)` callback of that stage's bar."""
    if not enabled:
        yield _silent
        return
    console = Console(file=stream if stream is not None else sys.stderr)
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )
    tasks: dict[str, TaskID] = {}

    def stage(description: str) -> Advance:
        def advance(done: int, total: int) -> None:
            if description not in tasks:
                tasks[description] = bars.add_task(description, total=total)
            bars.update(tasks[description], completed=done, total=total)

        return advance

    with bars:
        yield stage
