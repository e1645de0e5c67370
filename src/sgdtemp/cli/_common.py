"""Helpers shared by the subcommands: JSON output, output folders, progress bars."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from sgdtemp.errors import UserError
from sgdtemp.files import json_text

__all__ = ["add_output_args", "emit_json", "ensure_out_dir", "progress_enabled"]


def add_output_args(parser: Any, *, out_required: bool = False) -> None:
    """Add the shared ``--out DIR`` and ``--json`` options."""
    parser.add_argument(
        "--out", type=Path, required=out_required, metavar="DIR", help="folder for output files"
    )
    parser.add_argument(
        "--json", action="store_true", help="print a machine-readable summary on stdout"
    )


def emit_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON on stdout."""
    sys.stdout.write(json_text(obj) + "\n")


def ensure_out_dir(path: Path) -> Path:
    """Create the output folder (parents too); existing files in it are kept.

    Raises:
        UserError: if the path exists and is not a folder, or cannot be created.
    """
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {path} exists and is not a folder; choose another path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"--out {path} cannot be created ({err.strerror})") from err
    return path


def progress_enabled(json_mode: bool) -> bool:
    """Progress bars only on an interactive terminal and never under ``--json``."""
    return not json_mode and sys.stderr.isatty()
