"""kidneyct's shared corner: settings, logging and the command line."""

__version__ = "0.1.0"
