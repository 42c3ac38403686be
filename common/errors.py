"""Failures a person fixes by changing the setup: shown as one line, never as a traceback.

Code anywhere raises a `SetupError` (or lets one of the library errors below escape); the
`kidneyct` command turns it into `Error: <message>` and exit status 1 (see `kidneyct.cli`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import OperationalError, ProgrammingError

MIGRATE_HINT = "run `kidneyct db upgrade` first"


class SetupError(Exception):
    """Something in the environment or the settings keeps a command from working."""


class SchemaMissing(SetupError):
    """The database has no kidneyct schema (or an older one): `kidneyct db upgrade` creates it."""

    def __init__(
        self, message: str = f"the database has no kidneyct schema (or an older one): {MIGRATE_HINT}"
    ):
        super().__init__(message)


class PortUnavailable(SetupError):
    """A port cannot be bound (in use, not permitted, or an address this host does not have)."""


@contextmanager
def binding(what: str, host: str, port: int) -> Iterator[None]:
    """Turn the OSError of binding `host:port` into a `PortUnavailable` naming what wanted it."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise PortUnavailable(f"cannot bind {what} to {host}:{port}: {reason}") from exc


def database_error_line(exc: OperationalError | ProgrammingError) -> str:
    """One line for a database failure that escaped a command: the driver's reason and what to do."""
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else type(exc).__name__
    if "no such table" in reason or ("relation" in reason and "does not exist" in reason):
        return f"the database has no kidneyct schema ({reason}): {MIGRATE_HINT}"
    return f"database error: {reason}"
