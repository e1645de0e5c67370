"""Export stored runs as a flat table: CSV (stdlib) or Parquet (pyarrow, or pandas)."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from sgdtemp.errors import UserError
from sgdtemp.files import atomic_writer
from sgdtemp.storage._records import RunRecord
from sgdtemp.storage._store import Store

__all__ = ["EXPORT_FORMATS", "export_runs", "flatten_metrics", "run_table"]

_BASE_COLUMNS = (
    "key",
    "sweep",
    "status",
    "dataset",
    "model",
    "lr",
    "batch_size",
    "momentum",
    "temperature",
    "seed",
    "attempts",
    "started_at",
    "finished_at",
    "host",
    "error",
)


def flatten_metrics(metrics: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """Scalars of a nested metrics dict as dotted columns; lists (per-epoch curves) are left out.

    Example:
        >>> flatten_metrics({"status": "ok", "final": {"test": {"loss": 0.3}}, "epochs": [1, 2]})
        {'status': 'ok', 'final.test.loss': 0.3}
    """
    out: dict[str, Any] = {}
    for name, value in (metrics or {}).items():
        column = f"{prefix}{name}"
        if isinstance(value, Mapping):
            out.update(flatten_metrics(value, prefix=f"{column}."))
        elif value is None or isinstance(value, str | int | float | bool):
            out[column] = value
    return out


def run_table(records: list[RunRecord]) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns and rows of a flat table: the run columns, ``metric.*`` scalars, and JSON text.

    Returns:
        ``(columns, rows)``: the base columns, then every flattened metric seen (sorted, prefixed
        ``metric.``), then ``config``, ``metrics`` and ``environment`` as JSON text.
    """
    flat = [flatten_metrics(r.metrics, prefix="metric.") for r in records]
    metric_columns = sorted({c for row in flat for c in row})
    columns = [*_BASE_COLUMNS, *metric_columns, "config", "metrics", "environment"]
    rows = []
    for record, metrics in zip(records, flat):
        row: dict[str, Any] = {c: getattr(record, c) for c in _BASE_COLUMNS}
        row.update(metrics)
        for name in ("config", "metrics", "environment"):
            value = getattr(record, name)
            row[name] = None if value is None else json.dumps(value, sort_keys=True)
        rows.append(row)
    return columns, rows


def _write_csv(columns: list[str], rows: list[dict[str, Any]], out: Path | TextIO) -> None:
    def write(handle: TextIO) -> None:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)

    if isinstance(out, Path):
        with atomic_writer(out) as raw, io.TextIOWrapper(raw, newline="") as handle:
            write(handle)
            handle.flush()
            handle.detach()
    else:
        write(out)


def _parquet_backend() -> str:
    for module in ("pyarrow", "pandas"):
        if importlib.util.find_spec(module) is not None:
            return module
    raise UserError(
        "--format parquet needs pyarrow (or pandas with a parquet engine): "
        "pip install pyarrow, or use --format csv"
    )


def _write_parquet(columns: list[str], rows: list[dict[str, Any]], out: Path | TextIO) -> None:
    if not isinstance(out, Path):
        raise UserError("--format parquet writes a file: give --out FILE.parquet")
    backend = _parquet_backend()
    table = {c: [row.get(c) for row in rows] for c in columns}
    if backend == "pyarrow":
        import pyarrow as pa
        import pyarrow.parquet as pq

        with atomic_writer(out) as handle:
            pq.write_table(pa.table(table), handle)
    else:  # pragma: no cover - only without pyarrow
        import pandas as pd

        with atomic_writer(out) as handle:
            pd.DataFrame(table, columns=columns).to_parquet(handle, index=False)


EXPORT_FORMATS: dict[str, Callable[[list[str], list[dict[str, Any]], Path | TextIO], None]] = {
    "csv": _write_csv,
    "parquet": _write_parquet,
}


def export_runs(
    store: Store | str | Path,
    out: Path | TextIO,
    *,
    format: str = "csv",
    sweep: str | None = None,
) -> int:
    """Write the stored runs as one flat table.

    Args:
        store: a :class:`Store` or the path of its file (which must exist).
        out: the output file, or an open text stream (CSV only).
        format: ``"csv"`` or ``"parquet"`` (needs pyarrow, or pandas with a parquet engine).
        sweep: only this sweep's runs.

    Returns:
        The number of rows written.

    The store is opened read-only (a path) and never modified; a file ``out`` appears whole
    or not at all.

    Raises:
        UserError: on an unknown format or sweep, parquet without pyarrow/pandas, a file that
            is not an sgdtemp store or is damaged, or an ``out`` that cannot be written.

    Example:
        >>> import io, tempfile, pathlib
        >>> db = pathlib.Path(tempfile.mkdtemp()) / "runs.db"
        >>> buffer = io.StringIO()
        >>> Store(db).close()  # an empty store
        >>> export_runs(db, buffer)
        0
        >>> buffer.getvalue().splitlines()[0][:24]
        'key,sweep,status,dataset'
    """
    writer = EXPORT_FORMATS.get(format)
    if writer is None:
        raise UserError(f"--format {format}: unknown; choose one of {', '.join(EXPORT_FORMATS)}")
    if format == "parquet":
        _parquet_backend()
    owned = not isinstance(store, Store)
    db = store if isinstance(store, Store) else Store(store, readonly=True)
    try:
        if sweep is not None and sweep not in db.sweeps():
            known = ", ".join(db.sweeps()) or "none"
            raise UserError(f"--sweep {sweep}: not in {db.path} (sweeps: {known})")
        columns, rows = run_table(db.runs(sweep=sweep))
    finally:
        if owned:
            db.close()
    try:
        writer(columns, rows, out)
    except OSError as err:
        raise UserError(
            f"--out {getattr(out, 'name', out)} cannot be written ({err.strerror or err}); "
            "choose a writable place"
        ) from err
    return len(rows)
