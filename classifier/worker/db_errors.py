"""Which database errors are an outage (wait and retry), which are this batch's data (poison),
and which mean the schema is missing (stop and say `kidneyct db upgrade`).

Retrying a value that does not fit its column forever would stall the partition; waiting for a
schema that no one will create would hang the worker in silence.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    SQLAlchemyError,
    StatementError,
)

# sqlite3 says "no such table"; psycopg raises UndefinedTable ("relation ... does not exist").
_MISSING_SCHEMA_MARKERS = ("no such table", "undefinedtable")


class DbErrorKind(StrEnum):
    OUTAGE = "outage"
    DATA = "data"
    SCHEMA_MISSING = "schema_missing"


def classify(exc: BaseException) -> DbErrorKind:
    """What kind of failure `exc` (raised by a database call) is."""
    text = f"{type(getattr(exc, 'orig', None)).__name__} {exc}".lower()
    if isinstance(exc, DBAPIError) and any(marker in text for marker in _MISSING_SCHEMA_MARKERS):
        return DbErrorKind.SCHEMA_MISSING
    if isinstance(exc, (DataError, IntegrityError, OverflowError)):
        # OverflowError: sqlite3 cannot even bind an int beyond 64 bits (SQLAlchemy does not wrap it).
        return DbErrorKind.DATA
    if isinstance(exc, StatementError) and not isinstance(exc, DBAPIError):
        return DbErrorKind.DATA  # a value the driver refused to bind
    return DbErrorKind.OUTAGE


def is_database_error(exc: BaseException) -> bool:
    """Errors `classify` speaks for: SQLAlchemy's, and the driver's overflow it lets through."""
    return isinstance(exc, (SQLAlchemyError, OverflowError))
