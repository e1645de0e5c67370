"""Atomic file writes, JSON values and output folders: the one place the package writes files.

Every file the package produces (summaries, reports, checkpoints, downloads) is written to a
temporary file in the target's folder and moved over the target with ``os.replace``, so a reader
never sees a half-written file and an interrupted write leaves the old file (or none) behind.
JSON is strict: numpy / torch values become numbers and lists, non-finite floats ``null``.
Folders are made with :func:`make_dirs`, which says which folder it created, so that a call that
fails can remove what it created (:func:`remove_created`); :func:`writable_problem` tests a
place before any work is done there.

Example:
    >>> import json, math, tempfile, pathlib
    >>> json_safe({"loss": math.nan, "shape": (2, 3), "path": pathlib.Path("a")})
    {'loss': None, 'shape': [2, 3], 'path': 'a'}
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> write_json(folder / "x.json", {"a": 1.5})
    >>> json.loads((folder / "x.json").read_text())
    {'a': 1.5}
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_write",
    "atomic_writer",
    "json_safe",
    "write_json",
    "json_text",
    "make_dirs",
    "remove_created",
    "writable_problem",
]


def _umask() -> int:
    """The process's file-creation mask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_writer(
    path: str | os.PathLike[str], *, suffix: str = ".tmp", sync: bool = False
) -> Iterator[IO[bytes]]:
    """A binary handle whose content replaces ``path`` only when the block ends without error.

    Args:
        path: the target file (its folder must exist).
        suffix: suffix of the temporary file (``.part`` for downloads, say).
        sync: flush to disk (``fsync``) before the move, for files worth a crash guarantee.

    Yields:
        The open temporary file.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a result file follows the umask
        with os.fdopen(fd, "wb") as handle:
            yield handle
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike[str], data: bytes | str, *, sync: bool = False) -> None:
    """Write ``data`` (text as UTF-8) to ``path`` atomically."""
    with atomic_writer(path, sync=sync) as handle:
        handle.write(data.encode("utf-8") if isinstance(data, str) else data)


def json_safe(obj: Any) -> Any:
    """JSON values: dataclasses, numpy / torch values, tuples and paths; NaN and ±inf → None."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return json_safe({f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    tolist: Callable[[], Any] | None = getattr(obj, "tolist", None)
    if callable(tolist):  # numpy / torch arrays and scalars
        return json_safe(tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def json_text(obj: Any, *, indent: int | None = 2) -> str:
    """``obj`` as strict JSON text (see :func:`json_safe`)."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False)


def write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> None:
    """Write ``obj`` as strict JSON to ``path`` atomically."""
    atomic_write(path, json_text(obj, indent=indent))


def make_dirs(path: str | os.PathLike[str]) -> Path | None:
    """Create a folder with its missing parents.

    Returns:
        The outermost folder this call created (remove it to undo the call), or None when the
        folder existed already.

    Raises:
        OSError: when a folder cannot be created (what was created is removed again).
    """
    target = Path(path)
    missing = []
    probe = target
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    if not missing:
        return None
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError:
        remove_created(missing[-1])
        raise
    return missing[-1]


def remove_created(folder: str | os.PathLike[str] | None, *, keep_files: bool = False) -> None:
    """Undo :func:`make_dirs` after a failure: remove ``folder`` and what it holds.

    Args:
        folder: what :func:`make_dirs` returned (None: nothing to do).
        keep_files: remove only folders that hold no file (a resumable command keeps the work
            it did before failing).
    """
    if folder is None or not Path(folder).is_dir():
        return
    if not keep_files:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for root, _, _ in sorted(os.walk(folder), key=lambda entry: -len(entry[0])):
        try:
            os.rmdir(root)  # only succeeds for an empty folder
        except OSError:
            pass


def writable_problem(path: str | os.PathLike[str]) -> str | None:
    """Why files cannot be created at ``path`` (a folder, existing or to be made), or None.

    The check creates and removes a probe file in the folder, or in its nearest existing
    ancestor: permission bits say nothing for root or on read-only mounts, a write does.
    """
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is not a folder"
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".sgdtemp-probe-")
    except OSError as err:
        return f"{folder} is not writable ({err.strerror or err})"
    os.close(fd)
    os.unlink(probe)
    return None
