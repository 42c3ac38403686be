"""One vocabulary for what went wrong with a dependency, and one way to wait out an outage.

Every long-running loop (the classifier worker, the catalogue, the result sender) asks the same
question of an exception: is a dependency down (wait, retry, commit nothing meanwhile), is it this
input that can never succeed (set it aside and go on), or is the database not set up (stop and say
`kidneyct db upgrade`)? `failure_kind` answers it once; `retry_outages` waits out the first kind.

Retrying a value that does not fit its column forever would stall a partition; waiting for a schema
that no one will create would hang a process in silence: hence three kinds, not "retry everything".
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

import structlog
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, SQLAlchemyError, StatementError

from common.errors import SchemaMissing
from storage.archive.reader import ArchiveUnavailable
from storage.stream.contract import StreamUnavailable

log = structlog.get_logger()

T = TypeVar("T")

# sqlite3 says "no such table"; psycopg raises UndefinedTable ("relation ... does not exist").
_MISSING_SCHEMA_MARKERS = ("no such table", "undefinedtable")


class FailureKind(StrEnum):
    OUTAGE = "outage"  # a dependency is down or slow: wait and retry, commit nothing meanwhile
    DATA = "data"  # this input can never be stored: poison, set it aside
    SCHEMA_MISSING = "schema_missing"  # the database has no kidneyct schema: stop
    OTHER = "other"  # not a dependency failure (a bug): let it propagate


def failure_kind(exc: BaseException) -> FailureKind:
    """What kind of failure `exc`, raised by a database, stream or archive call, is."""
    if isinstance(exc, (StreamUnavailable, ArchiveUnavailable)):
        return FailureKind.OUTAGE
    if isinstance(exc, (SQLAlchemyError, OverflowError)):
        return _database_failure_kind(exc)
    return FailureKind.OTHER


def _database_failure_kind(exc: BaseException) -> FailureKind:
    text = f"{type(getattr(exc, 'orig', None)).__name__} {exc}".lower()
    if isinstance(exc, DBAPIError) and any(marker in text for marker in _MISSING_SCHEMA_MARKERS):
        return FailureKind.SCHEMA_MISSING
    if isinstance(exc, (DataError, IntegrityError, OverflowError)):
        # OverflowError: sqlite3 cannot even bind an int beyond 64 bits (SQLAlchemy does not wrap it).
        return FailureKind.DATA
    if isinstance(exc, StatementError) and not isinstance(exc, DBAPIError):
        return FailureKind.DATA  # a value the driver refused to bind
    return FailureKind.OUTAGE


class Abandoned(Exception):  # noqa: N818 - reads as what happened, as StreamUnavailable
    """A stop was requested while an outage was being waited out: nothing was committed."""


class DataFailure(Exception):  # noqa: N818 - reads as what happened
    """The action failed on its data (`FailureKind.DATA`); the cause is chained."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff between retries: initial_s, doubled each time, at most max_s."""

    initial_s: float = 0.5
    max_s: float = 30.0

    def delays(self) -> Iterator[float]:
        """The waits after the first, second, ... failed attempt."""
        failures = 0
        while True:
            failures += 1
            yield self.after(failures)

    def after(self, failures: int) -> float:
        """The wait after `failures` failed attempts (1: `initial_s`): for a retry that is not
        waited out in a loop but scheduled, such as an outbox row's next attempt."""
        if failures < 1:
            raise ValueError("failures must be at least 1")
        # The exponent is bounded so a row that failed very often cannot overflow the float.
        return min(self.initial_s * 2.0 ** min(failures - 1, 1000), self.max_s)


def short_error(exc: BaseException) -> str:
    """`Type: first line` of an exception, for a log line (driver messages run to many lines)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def retry_outages(
    action: Callable[[], T],
    *,
    what: str,
    stop: threading.Event,
    backoff: Backoff = Backoff(),
    on_retry: Callable[[BaseException], None] | None = None,
    log_each_retry: bool = True,
) -> T:
    """Run `action` until it succeeds, waiting out outages with backoff.

    An outage logs `dependency_unavailable` (and calls `on_retry`), waits, and retries;
    `Abandoned` if `stop` is set while waiting. A missing schema raises `SchemaMissing`, a data
    failure `DataFailure`; anything else propagates unchanged. With `log_each_retry=False` only
    the first failed attempt is logged (a loop that polls an idle stream would repeat it forever);
    `dependency_recovered` ends the outage either way.
    """
    attempt = 0
    for delay in backoff.delays():
        attempt += 1
        try:
            result = action()
        except Exception as exc:
            kind = failure_kind(exc)
            if kind is FailureKind.SCHEMA_MISSING:
                raise SchemaMissing() from exc
            if kind is FailureKind.DATA:
                raise DataFailure(what) from exc
            if kind is not FailureKind.OUTAGE:
                raise
            if on_retry is not None:
                on_retry(exc)
            if log_each_retry or attempt == 1:
                log.warning(
                    "dependency_unavailable",
                    action=what,
                    attempt=attempt,
                    retry_in_s=delay,
                    error=short_error(exc),
                )
            if stop.wait(delay):
                raise Abandoned(what) from exc
            continue
        if attempt > 1:
            log.info("dependency_recovered", action=what, attempts=attempt)
        return result
    raise AssertionError("unreachable: backoff.delays() never ends")
