"""Which lane a test runs in: `make check` takes what needs no service; the integration lane the rest.

tests/conftest.py applies `needs_services` to every collected test, so a new test lands in the right
lane without anyone marking it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Fixtures that start or reach a service; a test that takes one belongs to the integration lane.
SERVICE_FIXTURES = frozenset(
    {"kafka_bootstrap", "private_kafka", "postgres_url", "s3_server", "s3_archive_url", "private_s3"}
)
# Marks of tests that take their services with request.getfixturevalue (a parametrised stack).
SERVICE_MARKS = ("kafka", "postgres")
# Folders whose tests talk to real things (brokers, databases, DICOM peers, Docker) by design.
INTEGRATION_FOLDERS = ("integration", "compose")
TESTS_DIR = Path(__file__).resolve().parent


def needs_services(item: Any) -> bool:
    """True for a test in an integration folder, or one that takes a service fixture or mark."""
    try:
        folder = Path(str(item.path)).resolve().relative_to(TESTS_DIR).parts[0]
    except ValueError:
        folder = ""
    names = set(getattr(item, "fixturenames", ()))
    callspec = getattr(item, "callspec", None)
    params = callspec.params if callspec is not None else {}
    return (
        folder in INTEGRATION_FOLDERS
        or bool(SERVICE_FIXTURES & names)
        # `database_url` is PostgreSQL only in its "postgres" variant.
        or ("database_url" in names and params.get("database_url") == "postgres")
        or any(item.get_closest_marker(mark) is not None for mark in SERVICE_MARKS)
    )
