"""One vocabulary across the `kidneyct` commands: every option has help, none is shown under a spelling
`kidneyct.commands.options.NOT_CANONICAL` lists, old spellings still parse, and `kidneyct --help`
groups every command with the help the command itself gives."""

from __future__ import annotations

from collections.abc import Iterator

import click
from click.testing import CliRunner

from kidneyct.cli import HELP, SECTIONS, SUBCOMMANDS, cli
from kidneyct.commands.options import NOT_CANONICAL, AliasedOption

# kidneyct/demo.py is being reworked beside this change (issue 30, item 1): what it has not adopted
# yet. Empty this once the demo says --out for its folder and gives every option help.
NOT_YET: set[tuple[str, str]] = set()


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        yield " ".join((*path, name)), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


def _options() -> Iterator[tuple[str, click.Option]]:
    for path, command in _commands(cli):
        for param in command.params:
            if isinstance(param, click.Option):
                yield path, param


def _shown(option: click.Option) -> list[str]:
    hidden = option.hidden_aliases if isinstance(option, AliasedOption) else ()
    return [opt for opt in option.opts if opt not in hidden]


def test_every_option_has_help() -> None:
    """An option without help is a question a user cannot answer from `--help`."""
    missing = [
        f"{path} {option.opts[0]}"
        for path, option in _options()
        if not (option.help or "").strip() and (path, option.opts[0]) not in NOT_YET
    ]
    assert missing == []


def test_no_option_is_shown_under_a_non_canonical_name() -> None:
    """A model version is --model-version, an output folder --out, an image size --image-size."""
    wrong = [
        f"{path} {name} (say {NOT_CANONICAL[name]})"
        for path, option in _options()
        for name in _shown(option)
        if name in NOT_CANONICAL and (path, name) not in NOT_YET
    ]
    assert wrong == []


def test_old_spellings_still_parse_but_are_not_shown() -> None:
    """`reprocess --model` reaches the command as --model-version would; its help shows only the new name."""
    runner = CliRunner()
    shown = runner.invoke(cli, ["reprocess", "--help"], env={"KIDNEYCT_DATA_DIR": "unused"})
    assert "--model-version" in shown.output and "--model " not in shown.output
    parsed = cli.get_command(click.Context(cli), "reprocess")
    assert parsed is not None
    ctx = parsed.make_context("reprocess", ["--model", "v1"], obj=None)
    assert ctx.params["model_version"] == "v1"


def test_every_command_is_in_one_help_section() -> None:
    """`kidneyct --help` shows each command once, under run, models, data, setup or try."""
    listed = [name for names in SECTIONS.values() for name in names]
    assert sorted(listed) == sorted(SUBCOMMANDS)
    assert [title.lower() for title in SECTIONS] == ["run", "models", "data", "setup", "try"]


def test_the_top_level_help_is_the_commands_own() -> None:
    """The short help `kidneyct --help` shows (without importing any command) is each command's own."""
    ctx = click.Context(cli)
    drifted = {}
    for name in SUBCOMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None, name
        own = command.get_short_help_str(limit=200)
        if HELP[name] != own:
            drifted[name] = own
    assert drifted == {}
