"""The `kidneyct` subcommands: each builds settings-derived options and hands them down."""
