"""Where the monitor's records go: JSONL, TensorBoard, MLflow (or any object with ``write``).

A sink has ``write(record)`` (a flat dict of JSON values, see :mod:`sgdtemp.monitor.records`)
and ``close()``. TensorBoard and MLflow receive the numeric fields as scalars named
``sgdtemp/<field>`` at the record's step; their libraries are imported when the sink is made,
so the monitor itself needs neither. The monitor guards every call: a sink that raises is
reported once and training goes on.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

from sgdtemp.errors import UserError
from sgdtemp.files import json_safe
from sgdtemp.monitor.records import scalar_tags

__all__ = ["Sink", "JSONLSink", "TensorBoardSink", "MLflowSink"]


@runtime_checkable
class Sink(Protocol):
    """Receives records; ``close`` flushes whatever it buffers."""

    def write(self, record: Mapping[str, Any]) -> None:
        """Take one record (flat dict of JSON values with an int ``step``)."""
        ...

    def close(self) -> None:
        """Flush and release resources."""
        ...


class JSONLSink:
    r"""One JSON object per line: first ``{"meta": {...}}`` (when given), then the records.

    Each line is flushed as it is written, so a crashed run keeps every record before the crash.

    Args:
        path: the log file (its folder is created; an existing file is replaced unless
            ``append``).
        append: add to an existing file instead of replacing it.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "log.jsonl"
        >>> sink = JSONLSink(path)
        >>> sink.write({"step": 1, "lr": 0.1, "temperature": float("nan")})
        >>> sink.close()
        >>> path.read_text()
        '{"step": 1, "lr": 0.1, "temperature": null}\n'
    """

    def __init__(self, path: str | os.PathLike[str], *, append: bool = False) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle: IO[str] | None = self.path.open("a" if append else "w", encoding="utf-8")
        except OSError as err:
            raise UserError(f"cannot open the log {self.path} ({err.strerror})") from err

    def write_meta(self, meta: Mapping[str, Any]) -> None:
        """Write the ``meta`` line (the monitor's settings)."""
        self.write({"meta": dict(meta)})

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one line."""
        if self._handle is None:
            raise ValueError(f"the log {self.path} is closed")
        self._handle.write(json.dumps(json_safe(dict(record))) + "\n")
        self._handle.flush()

    def close(self) -> None:
        """Close the file."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class TensorBoardSink:
    """Scalars ``sgdtemp/<field>`` in a TensorBoard event file, events as text.

    Args:
        log_dir: folder of the event file (TensorBoard reads every event file in it, so it can be
            the folder another logger writes to); or pass ``writer``.
        writer: an existing ``torch.utils.tensorboard.SummaryWriter``-like object (closed by its
            owner, only flushed here).

    Raises:
        UserError: when neither or both are given, or ``tensorboard`` is not installed.
    """

    def __init__(self, log_dir: str | os.PathLike[str] | None = None, *, writer: Any = None):
        if (log_dir is None) == (writer is None):
            raise UserError("TensorBoardSink needs either log_dir or writer")
        self._owned = writer is None
        if writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise UserError(
                    "TensorBoardSink needs the tensorboard package: pip install 'sgdtemp[monitor]'"
                ) from err
            writer = SummaryWriter(log_dir=str(log_dir))
        self.writer = writer

    def write(self, record: Mapping[str, Any]) -> None:
        """Add the record's scalars (and its events as text) at its step."""
        step = int(record["step"])
        for tag, value in scalar_tags(dict(record)).items():
            self.writer.add_scalar(tag, value, step)
        for event in record.get("events") or ():
            self.writer.add_text("sgdtemp/events", str(event), step)

    def close(self) -> None:
        """Flush; close the writer if this sink made it."""
        self.writer.flush()
        if self._owned:
            self.writer.close()


class MLflowSink:
    """Metrics ``sgdtemp/<field>`` in an MLflow run, sent in batches.

    One ``log_batch`` call per ``flush_every`` metrics (an SQLite store takes milliseconds per
    call, too slow for every step), and at :meth:`close`.

    Args:
        run_id: the run to log to (default: the active run when no ``tracking_uri`` is given,
            else a new run, ended at :meth:`close`).
        tracking_uri: the tracking store, e.g. ``"sqlite:///mlflow.db"`` (default: MLflow's own
            default, ``MLFLOW_TRACKING_URI``).
        experiment: experiment name for a new run.
        flush_every: metrics buffered before a write.

    Raises:
        UserError: when ``mlflow`` is not installed.
    """

    def __init__(
        self,
        run_id: str | None = None,
        *,
        tracking_uri: str | None = None,
        experiment: str | None = None,
        flush_every: int = 2000,
    ) -> None:
        try:
            import mlflow
            from mlflow.entities import Metric
            from mlflow.tracking import MlflowClient
        except ImportError as err:
            raise UserError(
                "MLflowSink needs mlflow: pip install 'sgdtemp[monitor]' (mlflow-skinny works)"
            ) from err
        self._metric = Metric
        self._ended_by_us = False
        self.client = MlflowClient(tracking_uri=tracking_uri)
        if run_id is None:
            active = mlflow.active_run() if tracking_uri is None else None
            if active is not None:
                run_id = active.info.run_id
            else:
                experiment_id = None
                if experiment is not None:
                    found = self.client.get_experiment_by_name(experiment)
                    experiment_id = (
                        found.experiment_id
                        if found is not None
                        else self.client.create_experiment(experiment)
                    )
                run = self.client.create_run(experiment_id or "0")
                run_id = run.info.run_id
                self._ended_by_us = True
        self.run_id = run_id
        self.flush_every = int(flush_every)
        self._buffer: list[Any] = []

    def write(self, record: Mapping[str, Any]) -> None:
        """Buffer the record's scalars; send them once ``flush_every`` are waiting."""
        step = int(record["step"])
        stamp = int(time.time() * 1000)
        for tag, value in scalar_tags(dict(record)).items():
            self._buffer.append(self._metric(tag, value, stamp, step))
        if len(self._buffer) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Send the buffered metrics (MLflow takes at most 1000 per call)."""
        while self._buffer:
            chunk, self._buffer = self._buffer[:1000], self._buffer[1000:]
            self.client.log_batch(self.run_id, metrics=chunk)

    def close(self) -> None:
        """Send what is buffered; end the run if this sink started it."""
        self.flush()
        if self._ended_by_us:
            self.client.set_terminated(self.run_id)
            self._ended_by_us = False
