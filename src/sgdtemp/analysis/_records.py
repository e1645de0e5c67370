"""Stored runs as analysis-ready views: per-epoch curves as arrays, measurements normalized.

A training run's metrics are the record of ``sgdtemp train --json`` (see
:class:`sgdtemp.train.TrainResult`): ``epochs`` is a list of per-epoch records
``{"epoch", "step", "train": {"loss", "acc"}, "heldout": {...}, "test": {...},
"corrupt": {"NAME:SEVERITY": {...}}}`` starting at epoch 0 (before training); sweeps add
``curvature`` (Hutchinson trace, top Hessian eigenvalues) and ``lr_sharpness``, and per-run
shift measurements add ``shift`` (see :func:`shift_terms`). :func:`load_runs` turns every stored
run of a sweep into a :class:`RunView` with one ``(epochs + 1,)`` array per evaluation set.

A run trained until stationary (the sweep spec's ``[stop]``; ``config["stop"]``) also records
``stationary`` (``{"reached", "sde_time", "epoch", "max_sde_time", "sde_time_run", "rule",
"window", ...}``, see :mod:`sgdtemp.train.stationary_run`), when reached the stationary
expectations ``expectations`` / ``expectations_stderr`` / ``at_mean`` with flat set names
(``"corrupt:fog:3"``), and with ``[measure.mechanisms]`` the decomposition ``mechanisms``
(:meth:`sgdtemp.shift.MechanismsResult.summary` with ``status``), read by :func:`mechanisms_view`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sgdtemp.storage import RunRecord, Store

__all__ = [
    "RunView",
    "load_runs",
    "run_view",
    "pick_sweep",
    "shift_terms",
    "SHIFT_TERMS",
    "eval_kind",
    "merge_shift",
    "shift_records",
    "SHIFT_SUFFIX",
    "MECHANISM_TERMS",
    "Mechanisms",
    "mechanisms_view",
]

FloatArray = NDArray[np.float64]

# Keys of an epoch record that are not evaluation sets.
_NOT_SETS = ("epoch", "step")

#: The additive terms of the test-minus-train gap of a run on one evaluation set, in order:
#: ``gap = vertical + shift_curvature + remainder`` (theory.md §3.3).
SHIFT_TERMS = ("vertical", "shift_curvature", "remainder")

# Spellings of the terms that shift measurements may use (first match wins).
# (The names of :class:`sgdtemp.shift.ShiftResult` come second.)
_SHIFT_ALIASES: dict[str, tuple[str, ...]] = {
    "gap": ("gap", "generalization_gap"),
    "vertical": ("vertical", "vertical_shift"),
    "shift_curvature": ("shift_curvature",),
    "drop": ("drop", "measured_gap"),
    "shift_norm": ("shift_norm",),
}

#: The five named terms of the decomposition of a stationary run's expected eval objective
#: (theory.md §1.7), in order; their sum is the record's ``total`` (``sum``).
MECHANISM_TERMS = ("vertical", "shift_curvature", "cross", "bias_curvature", "covariance_curvature")

# The numbers of one eval set's decomposition that the analysis reads (NaN when absent).
_MECHANISM_NUMBERS = (
    *MECHANISM_TERMS,
    "covariance_curvature_se",
    "sampling_term",
    "sum",
    "measured",
    "measured_se",
    "remainder",
    "eval_loss_mean",
    "eval_loss_mean_se",
    "shift_norm",
)

#: Shift measurements stored apart from a sweep ``NAME`` go to the sweep ``NAME + SHIFT_SUFFIX``,
#: one record per training run with metrics ``{"of": RUN_KEY, "shift": {EVAL_SET: {...}}}``.
SHIFT_SUFFIX = ":shift"


def _float(value: Any) -> float:
    """A finite float or NaN (``None``, strings and non-finite values become NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value) if math.isfinite(value) else math.nan


def eval_kind(name: str) -> str:
    """What kind of shift an evaluation set measures.

    Example:
        >>> [eval_kind(n) for n in ("train", "heldout", "test", "corrupt:fog:3")]
        ['train', 'sampling', 'test', 'domain']
    """
    if name == "heldout":
        return "sampling"
    if name.startswith("corrupt:"):
        return "domain"
    return name


def shift_terms(entry: Mapping[str, Any]) -> dict[str, float]:
    """Normalize one run's shift measurement on one evaluation set.

    Returns ``gap`` (test minus train loss at the trained weights θ*), ``vertical``
    (L̃* − L*: the eval-set minimum's depth minus the train loss), ``shift_curvature``
    (½ sᵀH̃s), ``remainder`` (``gap − vertical − shift_curvature``), ``drop``
    (L̃(θ*) − L̃(θ̃*), what the quadratic picture predicts to be ½ sᵀH̃s) and ``shift_norm``
    (‖s‖); NaN where the measurement lacks a term.

    Example:
        >>> t = shift_terms({"gap": 0.3, "vertical": 0.1, "shift_curvature": 0.15})
        >>> round(t["remainder"], 12), math.isnan(t["drop"])
        (0.05, True)
    """
    out = {}
    for name, aliases in _SHIFT_ALIASES.items():
        out[name] = next((_float(entry[a]) for a in aliases if a in entry), math.nan)
    if "remainder" in entry:
        out["remainder"] = _float(entry["remainder"])
    else:
        out["remainder"] = out["gap"] - out["vertical"] - out["shift_curvature"]
    return out


@dataclass(frozen=True)
class Mechanisms:
    """A stationary run's decomposition of the expected eval objective, as the analysis reads it.

    Attributes:
        status: ``"ok"``, or ``"skipped"`` (with ``reason``) when it was not measured.
        reason: why it was skipped.
        converged: whether the descent to the train minimum θ* met its tolerance.
        message: why that descent stopped.
        weight_decay: λ of the objectives.
        evals: per eval set, the five terms of :data:`MECHANISM_TERMS`, their ``sum``,
            ``measured`` (the mean eval objective over the iterates minus F(θ*)) with
            ``measured_se``, ``sampling_term``, ``remainder``, ``covariance_curvature_se``,
            ``eval_loss_mean(_se)`` and ``shift_norm`` (NaN where absent).
        evals_converged: per eval set, whether the descent to θ̃* met its tolerance.
        evals_message: per eval set, why that descent stopped.
    """

    status: str
    reason: str | None = None
    converged: bool = False
    message: str = ""
    weight_decay: float = math.nan
    evals: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    evals_converged: Mapping[str, bool] = field(default_factory=dict)
    evals_message: Mapping[str, str] = field(default_factory=dict)

    def problem(self, eval_set: str) -> str | None:
        """Why the terms of ``eval_set`` cannot be used (None: they can).

        Example:
            >>> m = mechanisms_view({"status": "ok", "converged": True, "evals": {"test": {
            ...     "converged": False, "message": "max_iters", "vertical": 0.1}}})
            >>> m.problem("test"), m.problem("heldout")
            ('the descent on test did not converge (max_iters)', 'heldout was not measured')
        """
        if self.status != "ok":
            return f"not measured ({self.reason or self.status})"
        if not self.converged:
            return f"the descent to the train minimum did not converge ({self.message or '?'})"
        if eval_set not in self.evals:
            return f"{eval_set} was not measured"
        if not self.evals_converged.get(eval_set, False):
            why = self.evals_message.get(eval_set) or "?"
            return f"the descent on {eval_set} did not converge ({why})"
        terms = self.evals[eval_set]
        bad = [t for t in (*MECHANISM_TERMS, "sum", "measured") if not math.isfinite(terms[t])]
        if bad:
            return f"non-finite {', '.join(bad)} on {eval_set}"
        return None


def mechanisms_view(entry: Any) -> Mechanisms | None:
    """The :class:`Mechanisms` of a record's ``mechanisms`` entry (None when there is none)."""
    if not isinstance(entry, Mapping):
        return None
    evals: dict[str, dict[str, float]] = {}
    conv: dict[str, bool] = {}
    msg: dict[str, str] = {}
    for name, e in (entry.get("evals") or {}).items():
        if not isinstance(e, Mapping):
            continue
        terms = {k: _float(e.get(k)) for k in _MECHANISM_NUMBERS}
        if not math.isfinite(terms["sum"]):
            terms["sum"] = _float(e.get("total"))
        evals[str(name)] = terms
        conv[str(name)] = e.get("converged") is True
        msg[str(name)] = str(e.get("message") or "")
    return Mechanisms(
        status=str(entry.get("status", "ok")),
        reason=entry.get("reason"),
        converged=entry.get("converged") is True,
        message=str(entry.get("message") or ""),
        weight_decay=_float(entry.get("weight_decay")),
        evals=evals,
        evals_converged=conv,
        evals_message=msg,
    )


@dataclass(frozen=True, eq=False)
class RunView:
    """One stored run, ready for analysis.

    Attributes:
        key: the run key.
        sweep: the sweep that registered it.
        status: ``ok``, ``diverged``, ``unstable``, ``failed``, ``pending`` or ``running``.
        lr: learning rate η.
        batch_size: minibatch size B.
        momentum: heavy-ball momentum β.
        temperature: T = η/(B(1−β)) as stored.
        seed: the run's seed.
        epochs: the evaluated epochs, ``(E + 1,)`` (0 = before training).
        loss: per evaluation set (``train``, ``heldout``, ``test``, ``corrupt:NAME:SEVERITY``)
            the full-pass mean loss at each epoch, ``(E + 1,)`` (NaN where not finite).
        acc: the same for accuracy.
        n_train: training examples (from the steps per epoch: ``⌊N/B⌋·B``), or None.
        curvature: ``trace``, ``trace_stderr``, ``lambda_max`` of the trained model, when
            measured.
        lr_lambda_max: η·λ_max from the measured (or the spec's) sharpness, or None.
        shift: per evaluation set, the terms of :func:`shift_terms`.
        train_status: the trainer's own status for runs recorded ``unstable``.
        reason: why a run diverged or failed.
        environment: where it ran (packages, device, git commit).
        weight_decay: λ the run trained with.
        stop: the run's stationary options (``config["stop"]``; None: a fixed number of
            epochs).
        stationary: the record's ``stationary`` entry (None: not trained until stationary).
        expectations: the stationary expectations E_p[L̃] per set (``train`` and the eval
            sets, flat names), empty when not stationary.
        expectations_stderr: their standard errors.
        mechanisms: the decomposition of the expected eval objective, when measured.
    """

    key: str
    sweep: str
    status: str
    lr: float
    batch_size: int
    momentum: float
    temperature: float
    seed: int
    epochs: FloatArray
    loss: Mapping[str, FloatArray]
    acc: Mapping[str, FloatArray]
    n_train: int | None = None
    curvature: Mapping[str, float] | None = None
    lr_lambda_max: float | None = None
    shift: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    train_status: str | None = None
    reason: str | None = None
    environment: Mapping[str, Any] | None = None
    weight_decay: float = 0.0
    stop: Mapping[str, Any] | None = None
    stationary: Mapping[str, Any] | None = None
    expectations: Mapping[str, float] = field(default_factory=dict)
    expectations_stderr: Mapping[str, float] = field(default_factory=dict)
    mechanisms: Mechanisms | None = None

    @property
    def trained_to_stationarity(self) -> bool:
        """Whether the run was trained until stationary (a ``[stop]`` rule), reached or not."""
        return self.stationary is not None or self.stop is not None

    @property
    def stationary_reached(self) -> bool:
        """Whether the run became stationary within its budget (and has its expectations)."""
        return bool(self.stationary and self.stationary.get("reached") is True)

    @property
    def eval_sets(self) -> tuple[str, ...]:
        """The evaluation sets with curves, ``train`` first."""
        return tuple(self.loss)

    @property
    def finished_ok(self) -> bool:
        """Trained to the end without diverging (``ok``, or ``unstable`` whose training was ok)."""
        if self.status == "ok":
            return True
        return self.status == "unstable" and self.train_status == "ok" and len(self.epochs) > 1


def _flatten_epoch(record: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Nested eval sets as flat names: ``{"corrupt": {"fog:3": r}}`` → ``{"corrupt:fog:3": r}``."""
    out: dict[str, Mapping[str, Any]] = {}
    for name, value in record.items():
        if name in _NOT_SETS or not isinstance(value, Mapping):
            continue
        if "loss" in value or "acc" in value:
            out[name] = value
        else:
            for sub, inner in value.items():
                if isinstance(inner, Mapping):
                    out[f"{name}:{sub}"] = inner
    return out


def _curves(
    records: Sequence[Mapping[str, Any]],
) -> tuple[FloatArray, dict[str, FloatArray], dict[str, FloatArray]]:
    flat = [_flatten_epoch(r) for r in records]
    names: list[str] = []
    for f in flat:
        names.extend(n for n in f if n not in names)
    names.sort(key=lambda n: (n != "train", n != "heldout", n != "test", n))
    epochs = np.array([_float(r.get("epoch")) for r in records], dtype=np.float64)
    loss = {n: np.array([_float(f.get(n, {}).get("loss")) for f in flat]) for n in names}
    acc = {n: np.array([_float(f.get(n, {}).get("acc")) for f in flat]) for n in names}
    return epochs, loss, acc


def _curvature(metrics: Mapping[str, Any]) -> dict[str, float] | None:
    c = metrics.get("curvature")
    if not isinstance(c, Mapping) or c.get("status", "ok") != "ok":
        return None
    top = c.get("top_eigenvalues") or [c.get("lambda_max")]
    return {
        "trace": _float(c.get("trace")),
        "trace_stderr": _float(c.get("trace_stderr")),
        "lambda_max": _float(top[0] if top else None),
    }


def _shift_entries(value: Any) -> dict[str, dict[str, float]]:
    """``{EVAL_SET: terms}`` from ``{EVAL_SET: {...}}`` or one flat ``{"eval_set": .., ...}``."""
    if not isinstance(value, Mapping):
        return {}
    if isinstance(value.get("eval_set"), str):
        return {value["eval_set"]: shift_terms(value)}
    return {str(k): shift_terms(v) for k, v in value.items() if isinstance(v, Mapping)}


def _n_train(records: Sequence[Mapping[str, Any]], batch_size: int) -> int | None:
    for r in records:
        if r.get("epoch") == 1 and isinstance(r.get("step"), int) and r["step"] > 0:
            return int(r["step"]) * batch_size
    return None


def run_view(record: RunRecord) -> RunView | None:
    """The :class:`RunView` of a stored training run, or None for records that are not one.

    A record is a training run when it has a learning rate, a batch size and a temperature.
    """
    if record.lr is None or record.batch_size is None or record.temperature is None:
        return None
    metrics: Mapping[str, Any] = record.metrics or {}
    records = [r for r in metrics.get("epochs") or [] if isinstance(r, Mapping)]
    epochs, loss, acc = _curves(records)
    curvature = _curvature(metrics)
    lr_lambda = None
    if curvature is not None and math.isfinite(curvature["lambda_max"]):
        lr_lambda = record.lr * curvature["lambda_max"]
    elif isinstance(metrics.get("lr_sharpness"), int | float):
        lr_lambda = float(metrics["lr_sharpness"])
    shift = _shift_entries(metrics.get("shift"))
    config: Mapping[str, Any] = record.config or {}
    stop = config.get("stop")
    stationary = metrics.get("stationary")
    wd = _float(metrics.get("weight_decay", config.get("weight_decay", 0.0)))
    return RunView(
        key=record.key,
        sweep=record.sweep,
        status=record.status,
        lr=float(record.lr),
        batch_size=int(record.batch_size),
        momentum=float(record.momentum or 0.0),
        temperature=float(record.temperature),
        seed=int(record.seed or 0),
        epochs=epochs,
        loss=loss,
        acc=acc,
        n_train=_n_train(records, int(record.batch_size)),
        curvature=curvature,
        lr_lambda_max=lr_lambda,
        shift=shift,
        train_status=metrics.get("train_status"),
        reason=metrics.get("reason") or record.error,
        environment=record.environment,
        weight_decay=wd if math.isfinite(wd) else 0.0,
        stop=stop if isinstance(stop, Mapping) else None,
        stationary=stationary if isinstance(stationary, Mapping) else None,
        expectations=_flat_numbers(metrics.get("expectations")),
        expectations_stderr=_flat_numbers(metrics.get("expectations_stderr")),
        mechanisms=mechanisms_view(metrics.get("mechanisms")),
    )


def _flat_numbers(value: Any) -> dict[str, float]:
    """``{name: float}`` of a flat mapping of numbers (NaN for non-numbers)."""
    if not isinstance(value, Mapping):
        return {}
    return {str(k): _float(v) for k, v in value.items() if not isinstance(v, Mapping)}


def pick_sweep(store: Store, sweep: str | None = None) -> str | None:
    """The sweep to analyze: ``sweep`` if given, else the one with the most finished runs.

    Raises:
        KeyError: if ``sweep`` is not in the store.
    """
    names = [n for n in store.sweeps() if not n.endswith(SHIFT_SUFFIX)]
    if sweep is not None:
        if sweep not in names:
            raise KeyError(sweep)
        return sweep
    best, most = None, -1
    for name in names:
        counts = store.counts(sweep=name)
        finished = sum(counts[s] for s in ("ok", "diverged", "unstable", "failed"))
        if finished > most:
            best, most = name, finished
    return best


def load_runs(store: Store, *, sweep: str | None = None) -> list[RunView]:
    """Every training run of a sweep (or of the whole store) as a :class:`RunView`.

    Args:
        store: an open store.
        sweep: the sweep name; None reads every run in the store.

    Returns:
        The runs in sweep order; records that are not training runs are left out.
    """
    views = (run_view(r) for r in store.runs(sweep=sweep))
    return [v for v in views if v is not None]


def shift_records(store: Store, sweep: str) -> dict[str, dict[str, Any]]:
    """Shift measurements stored apart from ``sweep`` (see :data:`SHIFT_SUFFIX`), by run key."""
    name = sweep + SHIFT_SUFFIX
    if name not in store.sweeps():
        return {}
    out: dict[str, dict[str, Any]] = {}
    for record in store.runs(sweep=name, status="ok"):
        metrics = record.metrics or {}
        if isinstance(metrics.get("of"), str) and isinstance(metrics.get("shift"), Mapping):
            out.setdefault(metrics["of"], {}).update(metrics["shift"])
    return out


def merge_shift(runs: Iterable[RunView], shifts: Mapping[str, Any]) -> list[RunView]:
    """Attach shift measurements stored apart from the runs (by run key) to the views."""
    from dataclasses import replace

    out = []
    for run in runs:
        extra = _shift_entries(shifts.get(run.key))
        if extra:
            run = replace(run, shift={**run.shift, **extra})
        out.append(run)
    return out
