"""README.md and docs/settings.md stay true: the generated settings table, the two commands first,
a command map naming every command, and links that lead somewhere."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import click

from kidneyct.cli import cli
from kidneyct.settings import Settings

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
SETTINGS_DOC = (REPO / "docs" / "settings.md").read_text()
SCRIPT = runpy.run_path(str(REPO / "scripts" / "settings_table.py"))


def _section(text: str, heading: str) -> str:
    """The body of `## heading`, up to the next second-level heading."""
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_settings_table_matches_the_generator() -> None:
    """The table in docs/settings.md is exactly what scripts/settings_table.py prints (run it with --update)."""
    table = SCRIPT["settings_table"]()
    assert SCRIPT["replace_table"](SETTINGS_DOC, table) == SETTINGS_DOC


def test_the_script_updates_docs_settings() -> None:
    """`--update` writes to docs/settings.md, the file this test reads."""
    assert SCRIPT["SETTINGS_DOC"] == REPO / "docs" / "settings.md"
    assert SCRIPT["START"] in SETTINGS_DOC and SCRIPT["END"] in SETTINGS_DOC


def test_settings_table_has_one_row_per_setting() -> None:
    """Every Settings field has its row, with its environment variable name."""
    table = SCRIPT["settings_table"]()
    rows = table.splitlines()[2:]
    assert len(rows) == len(Settings.model_fields)
    for name in Settings.model_fields:
        assert f"| `KIDNEYCT_{name.upper()}` |" in table


def test_generator_detects_a_stale_table() -> None:
    """A docs/settings.md whose table lacks a row differs from the regenerated one."""
    table = SCRIPT["settings_table"]()
    stale = SCRIPT["replace_table"](SETTINGS_DOC, "\n".join(table.splitlines()[:-1]))
    assert SCRIPT["replace_table"](stale, table) != stale


def test_readme_starts_with_the_two_commands_and_stays_short() -> None:
    """`make demo` and `make test` (and `make check`) come first; the README is read to the end."""
    quick_start = _section(README, "Quick start")
    for command in ("make demo", "make test", "make check"):
        assert command in quick_start
    assert README.index("## Quick start") < README.index("## Commands")
    assert len(README.splitlines()) <= 250
    assert "settings-table:start" not in README


def test_readme_has_a_path_for_each_kind_of_user() -> None:
    """Try it, connect a PACS, bring a model, run at scale: each a section that links its docs."""
    for heading, doc in [
        ("Try it", "docs/e2e.md"),
        ("Connect a PACS", "docs/ingest.md"),
        ("Bring a model", "docs/training.md"),
        ("Run at scale", "docs/scale-out.md"),
    ]:
        assert doc in _section(README, heading)


def test_command_map_names_every_command() -> None:
    """Each command `kidneyct --help` lists has its row in the README's command map."""
    commands = cli.list_commands(click.Context(cli))
    command_map = _section(README, "Commands")
    missing = [name for name in commands if f"| `{name}" not in command_map]
    assert commands and missing == []


def test_readme_and_docs_links_lead_to_files() -> None:
    """Every relative link in README.md and docs/*.md names a file or folder that exists."""
    broken = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert broken == []


def test_test_service_variables_are_documented() -> None:
    """The variables that point the integration tests at Kafka and PostgreSQL are explained."""
    foundation = (REPO / "docs" / "foundation.md").read_text()
    for variable in ("KIDNEYCT_TEST_KAFKA_BOOTSTRAP", "KIDNEYCT_TEST_DATABASE_URL"):
        assert variable in foundation
