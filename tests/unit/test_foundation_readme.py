"""README.md stays true: the settings table is the generated one, and the promised sections exist."""

from __future__ import annotations

import runpy
from pathlib import Path

from kidneyct.settings import Settings

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
SCRIPT = runpy.run_path(str(REPO / "scripts" / "settings_table.py"))


def test_settings_table_matches_the_generator() -> None:
    """The table in README.md is exactly what scripts/settings_table.py prints (run it with --update)."""
    table = SCRIPT["settings_table"]()
    assert SCRIPT["replace_table"](README, table) == README


def test_settings_table_has_one_row_per_setting() -> None:
    """Every Settings field has its row, with its environment variable name."""
    table = SCRIPT["settings_table"]()
    rows = table.splitlines()[2:]
    assert len(rows) == len(Settings.model_fields)
    for name in Settings.model_fields:
        assert f"| `KIDNEYCT_{name.upper()}` |" in table


def test_generator_detects_a_stale_table() -> None:
    """A README whose table lacks a row differs from the regenerated one."""
    table = SCRIPT["settings_table"]()
    stale = SCRIPT["replace_table"](README, "\n".join(table.splitlines()[:-1]))
    assert SCRIPT["replace_table"](stale, table) != stale


def test_readme_has_the_two_commands_and_area_sections() -> None:
    """The set-up commands come first, and each area has its section linking its docs."""
    quick_start = README.index("## Quick start")
    assert README.index("make demo") > quick_start
    assert README.index("make test") > quick_start
    assert README.index("make demo") < README.index("## Settings")
    for section, doc in [
        ("## Ingest", "docs/ingest.md"),
        ("## Classifier workers", "docs/classifier.md"),
        ("## Training", "docs/training.md"),
        ("## End to end", "docs/e2e.md"),
    ]:
        assert f"\n{section}\n" in README
        assert doc in README.split(f"\n{section}\n", 1)[1].split("\n## ", 1)[0]
    for variable in ("KIDNEYCT_TEST_KAFKA_BOOTSTRAP", "KIDNEYCT_TEST_DATABASE_URL"):
        assert variable in README
