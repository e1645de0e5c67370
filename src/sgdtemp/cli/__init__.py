"""The ``sgdtemp`` command line: a thin argparse layer over the library.

Each subcommand lives in its own module of this package and exposes ``register(subparsers)``,
which adds its parser and sets ``handler`` to a function ``(args) -> int``. This package is the
only place that parses arguments, prints, shows progress bars or chooses output folders; nothing
imports it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from sgdtemp.errors import UserError

__all__ = ["main", "build_parser"]

# Subcommand modules, in the order `sgdtemp --help` lists them.
COMMANDS = (
    "two_minima",
    "stationary",
    "train",
    "curvature",
    "shift",
    "scale",
    "monitor",
    "sweep",
    "report",
    "reproduce",
    "export",
    "download",
)


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (and exit code 2), not a usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every registered subcommand."""
    parser = _Parser(
        prog="sgdtemp",
        description="Temperature of SGD (learning rate / batch size): theory, simulation, "
        "sweeps and curvature.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name in COMMANDS:
        importlib.import_module(f"sgdtemp.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except UserError as err:
        print(f"sgdtemp {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sgdtemp {args.command}: interrupted", file=sys.stderr)
        return 130
