"""A wrong argument is answered with one line (exit 2), not click's usage block."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from kidneyct.cli import cli


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["label", "--csv", "missing.csv"], "Invalid value for '--csv': File 'missing.csv' does not exist."),
        (["train", "--no-such-option"], "No such option '--no-such-option'."),
        (
            ["synth", "--studies", "0", "--out", "s"],
            "Invalid value for '--studies': 0 is not in the range x>=1.",
        ),
        (["models", "import", "missing.h5"], "Invalid value for 'PATH': Path 'missing.h5' does not exist."),
        (["no-such-command"], "No such command 'no-such-command'."),
    ],
)
def test_a_usage_error_is_one_line_naming_the_help(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert result.output.splitlines() == [result.output.strip()]  # one line
    assert result.output.startswith(f"Error: {message}")
    assert "-h`)" in result.output  # where the help is


def test_a_bare_group_still_shows_its_help() -> None:
    """`kidneyct models` with no subcommand is not a mistake to answer in one line: its help lists them."""
    result = CliRunner().invoke(cli, ["models"])
    assert "promote" in result.output and "Usage:" in result.output
