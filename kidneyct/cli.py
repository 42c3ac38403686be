"""The `kidneyct` command. It only wires: settings are read once here and passed down.

Subcommands live in `kidneyct/commands/` (one module per command group), are registered here in
`SUBCOMMANDS` and imported only when invoked, so `kidneyct --help` does not pay for importing Keras.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError, ProgrammingError

from common.errors import SetupError, database_error_line
from common.log import configure_logging
from kidneyct.settings import Settings
from storage.stream.contract import StreamUnavailable

# name -> "module:attribute" of a click command or group.
SUBCOMMANDS: dict[str, str] = {
    "db": "kidneyct.commands.db:db",
    "kafka": "kidneyct.commands.kafka:kafka",
    "listen": "kidneyct.commands.ingest:listen",
    "catalog": "kidneyct.commands.ingest:catalog",
    "worker": "kidneyct.commands.classifier:worker",
    "reprocess": "kidneyct.commands.reprocess:reprocess",
    "serve": "kidneyct.serve:serve",
    "send-results": "kidneyct.commands.delivery:send_results",
    "label": "kidneyct.commands.label:label",
    "dataset": "kidneyct.commands.dataset:dataset",
    "train": "kidneyct.commands.train:train",
    "models": "kidneyct.commands.models:models",
    "evaluate": "kidneyct.commands.evaluate:evaluate",
    "synth": "kidneyct.commands.synth:synth",
    "demo": "kidneyct.demo:demo",
    "review": "kidneyct.commands.review:review",
    "users": "kidneyct.commands.review:users",
}

# The first sentence of each command's own help (tests/unit/test_cli_vocabulary.py keeps them equal),
# here so that `kidneyct --help` imports no command module.
HELP: dict[str, str] = {
    "listen": "Receive CT over DICOM C-STORE, archive and publish it.",
    "catalog": "Record every received instance in the database.",
    "worker": "Classify received instances (one process per device).",
    "send-results": "Send the outbox's results (SR, heat maps) to PACS.",
    "serve": "Run the DICOM listener and the classifier worker(s) together.",
    "review": "Serve the review station (worklist, verdicts, monitoring).",
    "train": "Train, evaluate and register a candidate model version.",
    "evaluate": "Evaluate a model on a labelled folder.",
    "models": "List, promote, import, export, shadow and compare model versions.",
    "reprocess": "Classify archived studies (again) under a model version.",
    "label": "Record ground-truth labels (one, or many from a CSV file).",
    "dataset": "Register labelled image folders as training data.",
    "db": "Create or migrate the database schema.",
    "kafka": "Create the Kafka topics.",
    "users": "Add, remove, list review accounts; set passwords.",
    "demo": "Run the whole loop on synthetic data: synthesize, send, label, train, promote, classify, query.",
    "synth": "Write synthetic kidney-CT studies as DICOM (not clinical data).",
}

# How `kidneyct --help` groups the commands: every command in exactly one section.
SECTIONS: dict[str, tuple[str, ...]] = {
    "Run": ("listen", "catalog", "worker", "send-results", "serve", "review"),
    "Models": ("train", "evaluate", "models", "reprocess"),
    "Data": ("label", "dataset"),
    "Setup": ("db", "kafka", "users"),
    "Try": ("demo", "synth"),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                return _unavailable(name, str(exc))
            raise
        command: click.Command = getattr(module, attribute)
        return command

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        """A wrong option of `kidneyct` itself (or an unknown command) is one line too."""
        with _one_line_usage_errors():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        """Setup problems end the command with one clear line instead of a traceback; so do wrong
        arguments of any subcommand (`OneLineUsageError`)."""
        try:
            with _one_line_usage_errors():
                return super().invoke(ctx)
        except SetupError as exc:
            raise click.ClickException(str(exc)) from None
        except (OperationalError, ProgrammingError) as exc:
            raise click.ClickException(database_error_line(exc)) from None
        except StreamUnavailable as exc:  # Kafka unreachable when a command starts
            raise click.ClickException(f"the event stream is unavailable: {exc}") from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        for title, names in SECTIONS.items():
            with formatter.section(f"{title} commands"):
                formatter.write_dl([(name, HELP.get(name, "")) for name in names])


class OneLineUsageError(click.UsageError):
    """A wrong argument answered in one line: click's own shows the usage line, a hint and a blank
    line before the message, four lines for one mistake. Same exit status (2), same message."""

    def __init__(self, error: click.UsageError) -> None:
        super().__init__(error.format_message(), error.ctx)

    def show(self, file: Any = None) -> None:
        where = f" (see `{self.ctx.command_path} -h`)" if self.ctx is not None else ""
        click.echo(f"Error: {self.format_message()}{where}", file=file, err=file is None)


@contextmanager
def _one_line_usage_errors() -> Iterator[None]:
    try:
        yield
    except (OneLineUsageError, click.exceptions.NoArgsIsHelpError):
        raise  # already one line, or a bare group name: its help is the answer
    except click.UsageError as exc:
        raise OneLineUsageError(exc) from None


def _unavailable(name: str, reason: str) -> click.Command:
    @click.command(name=name, help=f"(not available: {reason})")
    def command() -> None:
        raise click.ClickException(f"`kidneyct {name}` is not available: {reason}")

    return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="kidneyct")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """kidneyct: receive kidney CT over DICOM, classify it, and keep the results in SQL."""
    settings = load_settings()
    configure_logging(
        fmt=settings.log_format, level=settings.log_level, redact_accession=settings.log_redact_accession
    )
    ctx.obj = settings


def load_settings() -> Settings:
    """The settings from the environment; a bad value is one clear line naming its variable."""
    try:
        return Settings()
    except ValidationError as exc:
        raise click.ClickException(describe_settings_error(exc)) from None


def describe_settings_error(exc: ValidationError) -> str:
    """`KIDNEYCT_X: why` for each bad variable; values are not repeated (one may be a password)."""
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "?"
        message = str(error["msg"]).removeprefix("Value error, ")
        problems.append(f"KIDNEYCT_{field.upper()}: {message}")
    return "bad setting: " + "; ".join(problems)


def main(argv: list[str] | None = None) -> Any:
    return cli.main(args=argv, prog_name="kidneyct")


if __name__ == "__main__":
    main()
