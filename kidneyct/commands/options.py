"""The option vocabulary every command shares: one name for a model version, one for an output
folder, one for an image size. Old spellings still parse for one release, as hidden aliases.

`tests/unit/test_cli_vocabulary.py` walks every command and fails on an option without help or
shown under a spelling that `NOT_CANONICAL` lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

MODEL_VERSION = "--model-version"
OUT = "--out"
IMAGE_SIZE = "--image-size"

# Spellings that name one of the three above in some command, and what to write instead.
NOT_CANONICAL: dict[str, str] = {
    "--version": MODEL_VERSION,  # the top-level `kidneyct --version` prints the program's version
    "--model": MODEL_VERSION,
    "--dir": OUT,
    "--output": OUT,
    "--out-dir": OUT,
    "--output-dir": OUT,
    "--size": IMAGE_SIZE,
}


class AliasedOption(click.Option):
    """An option that also parses `hidden_aliases`, which its help never shows."""

    def __init__(self, *args: Any, hidden_aliases: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hidden_aliases = tuple(hidden_aliases)
        self.opts = [*self.opts, *self.hidden_aliases]

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        shown = self.opts
        self.opts = [opt for opt in self.opts if opt not in self.hidden_aliases]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = shown

    def get_error_hint(self, ctx: click.Context | None) -> str:
        return " / ".join(f"'{opt}'" for opt in self.opts if opt not in self.hidden_aliases)


def option(*decls: str, hidden_aliases: Sequence[str] = (), **kwargs: Any) -> Any:
    """`click.option` with old spellings kept as `hidden_aliases`."""
    return click.option(*decls, cls=AliasedOption, hidden_aliases=hidden_aliases, **kwargs)
