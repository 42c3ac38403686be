"""The top layer: the `kidneyct` command, its subcommands, the wiring of each process, and the
settings, which only this package reads (docs/architecture.md)."""

__version__ = "0.1.0"
