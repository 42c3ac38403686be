"""The `kidneyct` console command: one entry point that lists every subcommand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from kidneyct.cli import HELP, SUBCOMMANDS, cli


def _console_script() -> str:
    # The console script installed beside this interpreter (pip install -e .).
    return str(Path(sys.executable).parent / "kidneyct")


def test_console_script_help_lists_every_subcommand() -> None:
    """`kidneyct --help` (the installed script) lists all subcommands."""
    result = subprocess.run(
        [_console_script(), "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    commands = result.stdout.split("Run commands:")[1]
    listed = [line.split()[0] for line in commands.splitlines() if line.startswith("  ") and line[2] != " "]
    assert sorted(listed) == sorted(SUBCOMMANDS)
    assert "Create or migrate the database schema." in commands


def test_every_subcommand_resolves_to_its_command_with_help_text() -> None:
    """Each entry of SUBCOMMANDS imports (a moved module would fail here) and is the click command of
    that name, and each has a non-empty one-line description in the help."""
    ctx = click.Context(cli)
    for name in SUBCOMMANDS:
        command = cli.get_command(ctx, name)
        assert isinstance(command, click.Command), name
        assert not (command.help or "").startswith("(not available"), f"{name}: {command.help}"
        assert command.name == name, (name, command.name)
        assert HELP.get(name, "").strip(), name


def test_unknown_subcommand_is_an_error() -> None:
    """An unknown subcommand exits non-zero with a usage error."""
    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command" in result.output


def test_db_subcommand_help() -> None:
    """`kidneyct db --help` lists upgrade, downgrade and current."""
    result = CliRunner().invoke(cli, ["db", "--help"])
    assert result.exit_code == 0, result.output
    for name in ("upgrade", "downgrade", "current"):
        assert name in result.output
