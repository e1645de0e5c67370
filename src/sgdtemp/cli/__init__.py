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
    """Run the command line; returns the process exit code.

    A user mistake (:class:`UserError`) is one line on stderr and exit code 2; a file-system
    fault or exhausted memory that no check foresaw is one line and exit code 1 (never a
    traceback). A call that fails that way removes the output folders it created.
    """
    from sgdtemp.cli._common import forget_created, undo_created

    parser = build_parser()
    args = parser.parse_args(argv)
    forget_created()
    try:
        code = int(args.handler(args))
    except UserError as err:
        undo_created()
        print(f"sgdtemp {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sgdtemp {args.command}: interrupted", file=sys.stderr)
        return 130
    except MemoryError as err:
        undo_created()
        detail = f" ({_one_line(err)})" if str(err) else ""
        print(
            f"sgdtemp {args.command}: error: out of memory{detail}; ask for less (a smaller "
            "grid, fewer chains or examples)",
            file=sys.stderr,
        )
        return 1
    except OSError as err:
        undo_created()
        where = f": {err.filename}" if err.filename else ""
        print(
            f"sgdtemp {args.command}: error: {err.strerror or _one_line(err)}{where}",
            file=sys.stderr,
        )
        return 1
    forget_created()
    return code


def _one_line(err: BaseException) -> str:
    """An error message on one line (line breaks folded into spaces)."""
    return " ".join(str(err).split())
