"""Atomic file writes and JSON values: the one place the package writes a result file.

Every file the package produces (summaries, reports, checkpoints, downloads) is written to a
temporary file in the target's folder and moved over the target with ``os.replace``, so a reader
never sees a half-written file and an interrupted write leaves the old file (or none) behind.
JSON is strict: numpy / torch values become numbers and lists, non-finite floats ``null``.

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
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_writer", "json_safe", "write_json", "json_text"]


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
