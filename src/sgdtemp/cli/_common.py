"""Helpers shared by the subcommands: JSON output, output folders, progress bars."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from sgdtemp.errors import UserError

__all__ = ["add_output_args", "emit_json", "ensure_out_dir", "progress_enabled", "to_jsonable"]


def add_output_args(parser: Any, *, out_required: bool = False) -> None:
    """Add the shared ``--out DIR`` and ``--json`` options."""
    parser.add_argument(
        "--out", type=Path, required=out_required, metavar="DIR", help="folder for output files"
    )
    parser.add_argument(
        "--json", action="store_true", help="print a machine-readable summary on stdout"
    )


def to_jsonable(obj: Any) -> Any:
    """Turn numpy/torch scalars and arrays, tuples and non-finite floats into JSON values."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy / torch arrays and scalars
        return to_jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def emit_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON on stdout."""
    json.dump(to_jsonable(obj), sys.stdout, indent=2)
    sys.stdout.write("\n")


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
