"""The fast lane (`make check`) is chosen by tests/lanes.py through tests/conftest.py: nobody marks a test by hand."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from lanes import TESTS_DIR, needs_services


@dataclass
class _Item:
    """What `needs_services` reads of a pytest item."""

    path: Path
    fixturenames: list[str] = field(default_factory=list)
    callspec: Any = None
    marks: tuple[str, ...] = ()

    def get_closest_marker(self, name: str) -> object | None:
        return name if name in self.marks else None


@dataclass
class _Callspec:
    params: dict[str, str]


UNIT = TESTS_DIR / "unit" / "test_x.py"


@pytest.mark.parametrize(
    ("item", "integration"),
    [
        (_Item(UNIT, ["tmp_path"]), False),
        (_Item(UNIT, ["sqlite_url"]), False),
        (_Item(UNIT, ["database_url"], _Callspec({"database_url": "sqlite"})), False),
        (_Item(UNIT, ["database_url"], _Callspec({"database_url": "postgres"})), True),
        (_Item(UNIT, ["kafka_bootstrap"]), True),
        (_Item(UNIT, ["private_kafka"]), True),
        (_Item(UNIT, ["s3_archive_url"]), True),
        (_Item(UNIT, marks=("kafka",)), True),
        (_Item(TESTS_DIR / "integration" / "test_y.py"), True),
        (_Item(TESTS_DIR / "compose" / "test_z.py"), True),
    ],
    ids=[
        "plain",
        "sqlite",
        "database-sqlite",
        "database-postgres",
        "kafka",
        "private-kafka",
        "s3",
        "kafka-mark",
        "integration-folder",
        "compose-folder",
    ],
)
def test_a_test_that_needs_a_service_is_in_the_integration_lane(item: _Item, integration: bool) -> None:
    """A service fixture, a service mark or an integration folder puts a test outside `make check`."""
    assert needs_services(item) is integration  # type: ignore[arg-type]


def test_this_unit_test_runs_in_the_fast_lane(request: pytest.FixtureRequest) -> None:
    """The hook leaves a plain unit test unmarked, so `-m "not integration and not slow"` selects it."""
    assert request.node.get_closest_marker("integration") is None
