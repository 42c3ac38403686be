"""The `kidneyct` command. It only wires: settings are read once here and passed down.

Subcommands live beside the code they run (`ingest/cli.py`, `classifier/cli.py`, ...) and are
imported only when invoked, so `kidneyct --help` does not pay for importing Keras.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from kidneyct.log import configure_logging
from kidneyct.settings import Settings

# name -> "module:attribute" of a click command or group.
SUBCOMMANDS: dict[str, str] = {
    "db": "kidneyct.db_cli:db",
    "kafka": "kidneyct.kafka_cli:kafka",
    "listen": "ingest.cli:listen",
    "worker": "classifier.cli:worker",
    "serve": "kidneyct.serve:serve",
    "label": "training.cli:label",
    "dataset": "training.cli:dataset",
    "train": "training.cli:train",
    "models": "training.cli:models",
    "evaluate": "training.cli:evaluate",
    "synth": "training.synth.cli:synth",
    "demo": "kidneyct.demo:demo",
}

HELP: dict[str, str] = {
    "db": "Create or migrate the database schema.",
    "kafka": "Create the Kafka topics.",
    "listen": "Run the DICOM C-STORE listener.",
    "worker": "Run a classifier worker.",
    "serve": "Run the listener and a worker in one process.",
    "label": "Record ground-truth labels.",
    "dataset": "Register labelled image folders.",
    "train": "Train, evaluate and register a model version.",
    "models": "List and promote model versions.",
    "evaluate": "Evaluate a model on a labelled folder.",
    "synth": "Write synthetic kidney-CT studies as DICOM.",
    "demo": "Run the whole loop on synthetic data.",
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

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, HELP.get(name, "")) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


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
    settings = Settings()
    configure_logging(
        fmt=settings.log_format, level=settings.log_level, redact_accession=settings.log_redact_accession
    )
    ctx.obj = settings


def main(argv: list[str] | None = None) -> Any:
    return cli.main(args=argv, prog_name="kidneyct")
