"""Helpers shared by the subcommands: JSON output, output paths and folders, progress bars.

Output folders are checked (a non-empty path, a folder, writable) before any work, and created
through :func:`ensure_out_dir`, which remembers what it created: when a command then fails,
:func:`sgdtemp.cli.main` calls :func:`undo_created` so that the failed call leaves nothing behind
(a resumable command keeps the files its finished work wrote).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from sgdtemp.errors import UserError
from sgdtemp.files import json_text, make_dirs, remove_created, writable_problem

__all__ = [
    "add_output_args",
    "check_out_dir",
    "check_out_file",
    "emit_json",
    "ensure_out_dir",
    "nonempty_path",
    "progress_enabled",
    "undo_created",
]

# Folders created by this invocation, with whether their files are kept if it fails.
_CREATED: list[tuple[Path, bool]] = []


def nonempty_path(text: str) -> Path:
    """An argparse type: a path, refusing the empty string (which would mean the current folder).

    Raises:
        argparse.ArgumentTypeError: for an empty or blank path.
    """
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; give a file or folder name")
    return Path(text)


def add_output_args(parser: Any, *, out_required: bool = False) -> None:
    """Add the shared ``--out DIR`` and ``--json`` options."""
    parser.add_argument(
        "--out",
        type=nonempty_path,
        required=out_required,
        metavar="DIR",
        help="folder for output files",
    )
    parser.add_argument(
        "--json", action="store_true", help="print a machine-readable summary on stdout"
    )


def emit_json(obj: Any) -> None:
    """Print ``obj`` as indented JSON on stdout."""
    sys.stdout.write(json_text(obj) + "\n")


def check_out_dir(path: Path, option: str = "--out") -> None:
    """Check that ``path`` can be an output folder, creating nothing.

    Raises:
        UserError: if the path exists and is not a folder, or no file can be written there.
    """
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} exists and is not a folder; choose another path")
    problem = writable_problem(path)
    if problem is not None:
        raise UserError(f"{option} {path}: {problem}; choose another folder")


def check_out_file(path: Path, option: str = "--out") -> None:
    """Check that a file can be written at ``path`` (its folder exists and is writable).

    Raises:
        UserError: if the path is a folder, its folder is missing, or it cannot be written.
    """
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder; give a file name")
    parent = path.parent
    if not parent.is_dir():
        raise UserError(f"{option} {path}: the folder {parent} does not exist; create it first")
    problem = writable_problem(parent)
    if problem is not None:
        raise UserError(f"{option} {path}: {problem}; choose another place")


def ensure_out_dir(path: Path, *, option: str = "--out", keep_files: bool = False) -> Path:
    """Check and create the output folder (parents too); existing files in it are kept.

    What this creates is removed again if the command fails (see :func:`undo_created`).

    Args:
        path: the folder.
        option: how the user spelled the input, for messages.
        keep_files: on failure, keep files written inside (a resumable command's work) and
            remove only the empty folders this call created.

    Returns:
        ``path``.

    Raises:
        UserError: if the path exists and is not a folder, or cannot be created or written.
    """
    check_out_dir(path, option)
    try:
        created = make_dirs(path)
    except OSError as err:
        raise UserError(f"{option} {path} cannot be created ({err.strerror})") from err
    if created is not None:
        _CREATED.append((created, keep_files))
    return path


def undo_created() -> None:
    """Remove the folders this invocation created (called when it fails)."""
    while _CREATED:
        folder, keep_files = _CREATED.pop()
        remove_created(folder, keep_files=keep_files)


def forget_created() -> None:
    """Start an invocation with nothing to undo."""
    _CREATED.clear()


def progress_enabled(json_mode: bool) -> bool:
    """Progress bars only on an interactive terminal and never under ``--json``."""
    return not json_mode and sys.stderr.isatty()
