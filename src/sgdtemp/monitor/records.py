"""The monitor's records: one per logged step, flat JSON values, the same names in every sink.

Every step record carries ``step``, ``lr``, ``batch_size``, ``momentum``, ``temperature`` (``null``
with a ``temperature_note`` where T is undefined) and ``sde_time``; probe steps add the gradient
noise scale, the sharpness and their uncertainties (see :class:`MonitorRecord`). A JSONL log is
one ``{"meta": {...}}`` line followed by one record per line; TensorBoard and MLflow get the
numeric fields as scalars named ``sgdtemp/<field>`` at ``step``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sgdtemp.errors import UserError

__all__ = ["MonitorRecord", "PROBE_FIELDS", "TAG_PREFIX", "MonitorLog", "read_log", "scalar_tags"]

#: prefix of the TensorBoard / MLflow scalar names
TAG_PREFIX = "sgdtemp/"

#: fields present on probe steps only
PROBE_FIELDS = (
    "probe_loss",
    "noise_scale",
    "noise_scale_stderr",
    "noise_scale_low",
    "noise_scale_high",
    "trace_cov",
    "trace_cov_stderr",
    "grad_norm_sq",
    "grad_norm_sq_stderr",
    "noise_method",
    "noise_units",
    "critical_batch",
    "noise_floor",
    "noise_floor_stderr",
    "lambda_max",
    "lr_lambda_max",
    "lambda_max_residual",
    "lambda_max_converged",
    "lanczos_matvecs",
    "stability_threshold",
    "stability_ratio",
    "probe_seconds",
    "probe_error",
)


@dataclass(frozen=True)
class MonitorRecord:
    r"""What the monitor knows after one optimizer step.

    Attributes:
        step: optimizer steps done (1 after the first).
        lr: learning rate (the largest when parameter groups differ).
        batch_size: examples per step $B$.
        momentum: $\beta$ of the first moving parameter group.
        dampening: $\tau$.
        nesterov: Nesterov momentum.
        weight_decay: L2 coefficient of the first moving group.
        temperature: $T = \eta(1-\tau)/(B(1-\beta))$, ``None`` where undefined.
        temperature_note: why T is undefined.
        sde_time: $\sum_k \eta_k(1-\tau_k)/(1-\beta_k)$ so far (``None`` once a step had no T).
        loss: the training loss the caller passed, if any.
        probe_loss: mean loss on the probe (probe steps).
        noise_scale: $B_{\rm noise}$ on the probe, ``None`` when the signal is unresolved.
        noise_scale_stderr: its jackknife standard error.
        noise_scale_low: lower end of its 95 % (Fieller) interval; the lower bound when
            unresolved.
        noise_scale_high: upper end (``None`` when unresolved: unbounded).
        trace_cov: $\mathrm{tr}\,C$ (per-example gradient covariance) and its stderr in
            ``trace_cov_stderr``.
        trace_cov_stderr: see ``trace_cov``.
        grad_norm_sq: $\|G\|^2$ (unbiased) and its stderr in ``grad_norm_sq_stderr``.
        grad_norm_sq_stderr: see ``grad_norm_sq``.
        noise_method: ``"per-example"`` or ``"micro-batch"``.
        noise_units: units in the estimate (examples or micro-batches).
        critical_batch: ``"below"``, ``"near"``, ``"above"`` or ``"unresolved"`` (B against
            $B_{\rm noise}$, see :func:`sgdtemp.monitor.noise_scale.batch_verdict`).
        noise_floor: $(T/4)\,\mathrm{tr}\,C$, the stationary excess loss (theory.md §2.5).
        noise_floor_stderr: its standard error.
        lambda_max: $\lambda_{\max}$ of the probe loss Hessian plus the L2 term.
        lr_lambda_max: $\eta\lambda_{\max}$ (of the lr-scaled Hessian when lrs differ).
        lambda_max_residual: Ritz residual bound on ``lr_lambda_max``.
        lambda_max_converged: False: the values are lower bounds.
        lanczos_matvecs: Hessian-vector products spent.
        stability_threshold: the largest stable $\eta\lambda_{\max}$ (2, $2(1+\beta)$, ...).
        stability_ratio: ``lr_lambda_max / stability_threshold`` (unstable at 1 and above).
        probe_seconds: wall time of the probe.
        probe_error: why the probe failed (its fields are then absent).
        events: what happened at this step (warnings), one line each.
    """

    step: int
    lr: float
    batch_size: int | None
    momentum: float
    dampening: float
    nesterov: bool
    weight_decay: float
    temperature: float | None
    temperature_note: str | None
    sde_time: float | None
    loss: float | None = None
    probe_loss: float | None = None
    noise_scale: float | None = None
    noise_scale_stderr: float | None = None
    noise_scale_low: float | None = None
    noise_scale_high: float | None = None
    trace_cov: float | None = None
    trace_cov_stderr: float | None = None
    grad_norm_sq: float | None = None
    grad_norm_sq_stderr: float | None = None
    noise_method: str | None = None
    noise_units: int | None = None
    critical_batch: str | None = None
    noise_floor: float | None = None
    noise_floor_stderr: float | None = None
    lambda_max: float | None = None
    lr_lambda_max: float | None = None
    lambda_max_residual: float | None = None
    lambda_max_converged: bool | None = None
    lanczos_matvecs: int | None = None
    stability_threshold: float | None = None
    stability_ratio: float | None = None
    probe_seconds: float | None = None
    probe_error: str | None = None
    events: tuple[str, ...] = field(default=())

    @property
    def is_probe(self) -> bool:
        """Whether the probe ran (or was attempted) at this step."""
        return self.probe_seconds is not None or self.probe_error is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON values; probe fields only on probe steps, notes and events only when present.

        Example:
            >>> r = MonitorRecord(3, 0.1, 32, 0.0, 0.0, False, 0.0, 0.003125, None, 0.3)
            >>> r.to_dict()
            {'step': 3, 'lr': 0.1, 'batch_size': 32, 'momentum': 0.0, 'dampening': 0.0, \
'nesterov': False, 'weight_decay': 0.0, 'temperature': 0.003125, 'sde_time': 0.3}
        """
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in PROBE_FIELDS and self.probe_seconds is None and f.name != "probe_error":
                continue  # not a probe step, or a failed probe (only its error is kept)
            if f.name in ("temperature_note", "loss", "probe_error") and value is None:
                continue
            if f.name == "events":
                if value:
                    out["events"] = list(value)
                continue
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            out[f.name] = value
        return out


def scalar_tags(record: dict[str, Any]) -> dict[str, float]:
    """The numeric fields of a record as ``{"sgdtemp/<field>": value}`` (finite values only).

    Booleans become 0/1; strings, ``None`` and the step itself are left out.

    Example:
        >>> scalar_tags({"step": 2, "lr": 0.1, "temperature": None, "nesterov": False})
        {'sgdtemp/lr': 0.1, 'sgdtemp/nesterov': 0.0}
    """
    out = {}
    for key, value in record.items():
        if key == "step" or isinstance(value, str) or value is None:
            continue
        if isinstance(value, bool | int | float) and math.isfinite(float(value)):
            out[TAG_PREFIX + key] = float(value)
    return out


@dataclass(frozen=True)
class MonitorLog:
    """A JSONL log read back.

    Attributes:
        meta: the ``meta`` line (empty when absent).
        records: the step records, in file order.
        skipped: lines that were not JSON objects (a run killed mid-write leaves one).
    """

    meta: dict[str, Any]
    records: list[dict[str, Any]]
    skipped: int

    def series(self, name: str, *, probes: bool = False) -> tuple[list[int], list[float]]:
        """Steps and finite values of field ``name`` (only probe steps with ``probes``)."""
        steps, values = [], []
        for r in self.records:
            value = r.get(name)
            if probes and "probe_seconds" not in r:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value):
                steps.append(int(r["step"]))
                values.append(float(value))
        return steps, values

    @property
    def probes(self) -> list[dict[str, Any]]:
        """The records of probe steps."""
        return [r for r in self.records if "probe_seconds" in r or "probe_error" in r]


def _lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as handle:
        yield from handle


def read_log(path: str | Path) -> MonitorLog:
    """Read a JSONL log written by :class:`sgdtemp.monitor.JSONLSink`.

    Raises:
        UserError: if the file is missing, unreadable, or holds no step record.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such log file; a JSONLSink writes one")
    meta: dict[str, Any] = {}
    records: list[dict[str, Any]] = []
    skipped = 0
    try:
        for line in _lines(path):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                skipped += 1
                continue
            if not isinstance(item, dict):
                skipped += 1
            elif "meta" in item and isinstance(item["meta"], dict):
                meta = item["meta"]
            elif isinstance(item.get("step"), int):
                records.append(item)
            else:
                skipped += 1
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read the log ({err})") from err
    if not records:
        raise UserError(f"{path}: no monitor records in this file (is it a monitor JSONL log?)")
    return MonitorLog(meta, records, skipped)
