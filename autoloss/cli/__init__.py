"""The ``autoloss`` command: ``app`` builds the parser and turns an AutoLossError into one line;
each subcommand group registers itself (``search``: search/export, ``train``: train/evaluate/
compare, ``plot``)."""

from autoloss.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
