"""The demo runs other commands on its own settings without changing the context it was called in."""

from __future__ import annotations

from pathlib import Path

import click

from kidneyct.demo import _run_command
from kidneyct.settings import Settings


def test_a_command_gets_the_demos_settings_and_its_own_defaults(tmp_path: Path) -> None:
    """The command sees the settings given (not the caller's) and click's default for an option not
    passed; the caller's context still holds its own settings afterwards."""
    caller_settings = Settings(data_dir=tmp_path / "caller")
    demo_settings = Settings(data_dir=tmp_path / "demo")
    seen: list[tuple[Settings, int]] = []

    @click.command()
    @click.option("--count", type=int, default=3)
    @click.pass_obj
    def probe(settings: Settings, count: int) -> None:
        seen.append((settings, count))

    with click.Context(click.Command("demo"), obj=caller_settings) as caller:
        _run_command(demo_settings, probe)
        assert caller.obj is caller_settings
        assert click.get_current_context() is caller
    assert seen == [(demo_settings, 3)]
