r"""Test loss, curvature and the shift decomposition as functions of the temperature $T$.

**Where test losses are compared.** The theory speaks about the stationary law of SGD, so a sweep
trained until stationary (a ``[stop]`` rule; :mod:`sgdtemp.analysis.regime`) is compared

- *at stationarity*: each run's stationary expectation $\mathbb E_p[\tilde L]$ (the mean loss
  over the iterates sampled from its stationary window); only runs that became stationary within
  their budget count, the others are counted and left out. The final-epoch and matched-train-loss
  values of the same runs are kept as labelled references and used by no verdict.

A sweep trained for a fixed number of epochs has no stationary expectations. A fixed epoch count
is not a fair point: at fixed epochs the SDE time $t = eNT$ grows with $T$, so low-$T$ runs are
still training and look worse for that reason alone. Such runs are compared

- *near stationarity*: when every included run's train loss has reached a plateau (it moved by
  less than :data:`PLATEAU_RTOL` of its value over the last :data:`PLATEAU_WINDOW` of the epochs),
  at the final epoch;
- otherwise *at matched train loss*: at the lowest train loss $L^\star$ that every included run
  reaches (the largest of the runs' minimum train losses), each run's evaluation losses are
  interpolated linearly in epochs at the first time its train loss falls to $L^\star$.

The final-epoch values are kept for reference and used by no verdict.

**Trend.** Per evaluation set, the slope of the compared loss on $\log_2 T$ is fitted over all
included runs with one intercept per seed (runs with one seed share initialization), with a
confidence interval; per $T$, the mean over seeds (each seed averaged over its batch sizes) with
a Student-t interval. Included runs are those whose cell is in the SDE regime (every seed
trained to the end and $\eta\lambda_{\max} < 1$; see :mod:`sgdtemp.analysis.invariance`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sgdtemp.analysis._records import SHIFT_TERMS, RunView, eval_kind
from sgdtemp.analysis._stats import Slope, blocked_slope, mean_ci
from sgdtemp.analysis.invariance import cell_key, cell_role

__all__ = [
    "TemperaturePoint",
    "TestLossTrend",
    "CurvatureTrend",
    "ShiftTrend",
    "test_loss_vs_temperature",
    "curvature_vs_temperature",
    "shift_vs_temperature",
    "stable_runs",
    "has_plateau",
    "PLATEAU_RTOL",
    "PLATEAU_WINDOW",
    "COMPARED_AT",
]

#: A train loss is on a plateau when it moved by less than this fraction of its final value ...
PLATEAU_RTOL = 0.05
#: ... over this fraction of the epochs (at least 2 epochs).
PLATEAU_WINDOW = 0.25
#: Where a claim's losses are compared: the runs' stationary expectations, the point of matched
#: train loss, or the final epoch (of runs on a train-loss plateau, or for reference).
COMPARED_AT = ("stationary", "matched train loss", "final epoch")
# TestLossTrend.mode -> where its verdict compares.
_MODE_COMPARED_AT = {
    "stationary": "stationary",
    "plateau": "final epoch",
    "matched train loss": "matched train loss",
}


def _key(t: float) -> float:
    return float(f"{t:.6g}")


@dataclass(frozen=True)
class TemperaturePoint:
    """One temperature of a trend.

    Attributes:
        temperature: T.
        mean: mean over seeds of the seed's mean over batch sizes.
        ci: Student-t confidence interval over seeds (NaN with one seed).
        n_runs: runs at this T.
        n_seeds: seeds at this T.
        values: the per-run values, in run order.
        epoch: mean epoch of the comparison point (NaN for curvature and shift).
    """

    temperature: float
    mean: float
    ci: tuple[float, float]
    n_runs: int
    n_seeds: int
    values: tuple[float, ...]
    epoch: float = math.nan


def _points(
    runs: Sequence[RunView], values: Sequence[float], epochs: Sequence[float] | None = None
) -> tuple[TemperaturePoint, ...]:
    by_t: dict[float, list[int]] = {}
    for i, r in enumerate(runs):
        by_t.setdefault(_key(r.temperature), []).append(i)
    out = []
    for t in sorted(by_t):
        idx = [i for i in by_t[t] if math.isfinite(values[i])]
        if not idx:
            continue
        per_seed: dict[int, list[float]] = {}
        for i in idx:
            per_seed.setdefault(runs[i].seed, []).append(values[i])
        m, lo, hi = mean_ci([float(np.mean(v)) for v in per_seed.values()])
        ep = float(np.mean([epochs[i] for i in idx])) if epochs is not None else math.nan
        out.append(
            TemperaturePoint(
                temperature=t,
                mean=m,
                ci=(lo, hi),
                n_runs=len(idx),
                n_seeds=len(per_seed),
                values=tuple(values[i] for i in idx),
                epoch=ep,
            )
        )
    return tuple(out)


def _slope(runs: Sequence[RunView], values: Sequence[float]) -> Slope:
    return blocked_slope(
        [math.log2(r.temperature) for r in runs], list(values), [r.seed for r in runs]
    )


def stable_runs(runs: Iterable[RunView]) -> tuple[list[RunView], list[str]]:
    """The runs of the cells in the SDE regime, and a description of every cell left out.

    A cell is left out when one of its seeds did not train to the end (diverged, failed,
    unfinished) or its median η·λ_max is at least 1 (see
    :func:`~sgdtemp.analysis.invariance.cell_role`).
    """
    by_cell: dict[tuple[float, int], list[RunView]] = {}
    for r in runs:
        if r.status not in ("pending", "running"):
            by_cell.setdefault(cell_key(r), []).append(r)
    keep: list[RunView] = []
    dropped: list[str] = []
    for (lr, b), members in sorted(by_cell.items()):
        role, reason, _ = cell_role(members)
        if role == "scored":
            keep.extend(members)
        else:
            dropped.append(f"lr={lr:.4g} B={b} ({role}: {reason})")
    return keep, dropped


def has_plateau(run: RunView) -> bool:
    """Whether the run's train loss is on a plateau at its last epoch (module docstring).

    Example:
        >>> e = np.arange(9.0)
        >>> def run(train):
        ...     return RunView("k", "s", "ok", 0.1, 8, 0.0, 0.0125, 0, e, {"train": train}, {})
        >>> has_plateau(run(0.3 + np.exp(-3 * e))), has_plateau(run(np.exp(-e / 4)))
        (True, False)
    """
    train = run.loss.get("train")
    if train is None or len(train) < 3 or not np.all(np.isfinite(train)):
        return False
    e = len(train) - 1
    window = max(2, math.ceil(PLATEAU_WINDOW * e))
    if window > e:
        return False
    return bool(abs(train[-1 - window] - train[-1]) <= PLATEAU_RTOL * abs(train[-1]))


def _at_train_loss(run: RunView, target: float, metric: str) -> tuple[float, float]:
    """The eval loss and epoch where the train loss first falls to ``target`` (interpolated)."""
    train, other = run.loss["train"], run.loss.get(metric)
    if other is None:
        return math.nan, math.nan
    hits = np.nonzero(train <= target)[0]
    if hits.size == 0:
        return math.nan, math.nan
    i = int(hits[0])
    if i == 0:
        return float(other[0]), float(run.epochs[0])
    drop = train[i - 1] - train[i]
    f = float((train[i - 1] - target) / drop) if drop > 0 else 1.0
    value = float(other[i - 1] + f * (other[i] - other[i - 1]))
    epoch = float(run.epochs[i - 1] + f * (run.epochs[i] - run.epochs[i - 1]))
    return value, epoch


@dataclass(frozen=True)
class TestLossTrend:
    r"""Loss on one evaluation set vs T, where the comparison means something.

    Attributes:
        eval_set: ``heldout``, ``test``, ``corrupt:NAME:SEVERITY`` (or ``train``).
        kind: ``sampling``, ``test``, ``domain`` (or ``train``).
        mode: ``"stationary"``, ``"plateau"`` or ``"matched train loss"`` (module docstring).
        target_train_loss: $L^\star$ for the matched mode (NaN otherwise).
        points: per T, the compared loss.
        slope: slope of the compared loss per doubling of T (seed blocks).
        final_points: per T, the final-epoch loss (reference only).
        final_slope: its slope (reference only).
        excess_slope: for ``corrupt:`` sets, the slope of (this loss − test loss): the part of
            the trend due to the domain shift alone (None otherwise).
        n_plateau: runs on a train-loss plateau.
        n_runs: runs compared.
        matched_points: in the stationary mode, per T, the loss of the same runs at matched
            train loss (reference only; empty otherwise).
        matched_slope: its slope (reference only; None otherwise).
        matched_target: its train loss $L^\star$ (NaN otherwise).
        n_not_stationary: runs of the SDE-regime cells left out because they did not become
            stationary within budget (stationary mode).
    """

    __test__ = False  # not a pytest class

    eval_set: str
    kind: str
    mode: str
    target_train_loss: float
    points: tuple[TemperaturePoint, ...]
    slope: Slope
    final_points: tuple[TemperaturePoint, ...]
    final_slope: Slope
    excess_slope: Slope | None
    n_plateau: int
    n_runs: int
    matched_points: tuple[TemperaturePoint, ...] = ()
    matched_slope: Slope | None = None
    matched_target: float = math.nan
    n_not_stationary: int = 0

    @property
    def compared_at(self) -> str:
        """Where the verdicts compare (one of :data:`COMPARED_AT`)."""
        return _MODE_COMPARED_AT[self.mode]

    @property
    def best_temperature(self) -> float:
        """The T with the lowest mean compared loss."""
        if not self.points:
            return math.nan
        return min(self.points, key=lambda p: p.mean).temperature


def test_loss_vs_temperature(
    runs: Iterable[RunView], *, eval_sets: Sequence[str] | None = None
) -> tuple[list[TestLossTrend], list[str]]:
    """Loss vs T on every evaluation set (module docstring).

    Args:
        runs: the runs of one sweep.
        eval_sets: the sets (default: every non-train set with curves or expectations).

    Returns:
        The trends (none in a sweep trained until stationary where no run of the SDE regime
        became stationary), and the cells left out (see :func:`stable_runs`).
    """
    views = list(runs)
    included, dropped = stable_runs(views)
    included = [r for r in included if "train" in r.loss and np.all(np.isfinite(r.loss["train"]))]
    stationary = any(r.trained_to_stationarity for r in views)
    n_not = 0
    if stationary:
        reached = [r for r in included if r.stationary_reached and r.expectations]
        n_not = len(included) - len(reached)
        included = reached
    if not included:
        return [], dropped
    if eval_sets is None:
        names: list[str] = []
        for r in included:
            names.extend(n for n in (*r.loss, *r.expectations) if n != "train" and n not in names)
        eval_sets = names
    n_plateau = sum(has_plateau(r) for r in included)
    plateau = n_plateau == len(included)
    target = max(float(np.min(r.loss["train"])) for r in included)
    mode = "stationary" if stationary else "plateau" if plateau else "matched train loss"

    def final(name: str) -> list[float]:
        return [float(r.loss[name][-1]) if name in r.loss else math.nan for r in included]

    def matched(name: str) -> tuple[list[float], list[float]]:
        pairs = [_at_train_loss(r, target, name) for r in included]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def compared(name: str) -> tuple[list[float], list[float]]:
        if mode == "stationary":
            values = [r.expectations.get(name, math.nan) for r in included]
            epochs = [_float_or_nan((r.stationary or {}).get("epoch")) for r in included]
            return values, epochs
        if mode == "plateau":
            return final(name), [float(r.epochs[-1]) for r in included]
        return matched(name)

    trends = []
    for name in eval_sets:
        values, epochs = compared(name)
        excess = None
        if name.startswith("corrupt:"):
            ref = compared("test")[0]
            excess = _slope(included, [v - w for v, w in zip(values, ref)])
        finals = final(name)
        m_points: tuple[TemperaturePoint, ...] = ()
        m_slope = None
        if mode == "stationary":
            m_values, m_epochs = matched(name)
            m_points, m_slope = _points(included, m_values, m_epochs), _slope(included, m_values)
        trends.append(
            TestLossTrend(
                eval_set=name,
                kind=eval_kind(name),
                mode=mode,
                target_train_loss=target if mode == "matched train loss" else math.nan,
                points=_points(included, values, epochs),
                slope=_slope(included, values),
                final_points=_points(included, finals),
                final_slope=_slope(included, finals),
                excess_slope=excess,
                n_plateau=n_plateau,
                n_runs=sum(math.isfinite(v) for v in values),
                matched_points=m_points,
                matched_slope=m_slope,
                matched_target=target if mode == "stationary" else math.nan,
                n_not_stationary=n_not,
            )
        )
    return trends, dropped


def _float_or_nan(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return math.nan


@dataclass(frozen=True)
class CurvatureTrend:
    """A curvature measure of the trained models vs T.

    Attributes:
        measure: ``"trace"`` (Hutchinson) or ``"lambda_max"`` (Lanczos).
        points: per T, the measure at the last epoch.
        log_slope: slope of log(measure) per doubling of T (seed blocks).
        n_runs: runs with the measurement.
    """

    measure: str
    points: tuple[TemperaturePoint, ...]
    log_slope: Slope
    n_runs: int


def curvature_vs_temperature(runs: Iterable[RunView]) -> list[CurvatureTrend]:
    """Hessian trace and λ_max of the trained models vs T (cells in the SDE regime).

    Returns:
        One trend per measure that some run has (empty when curvature was not measured).
    """
    included, _ = stable_runs(runs)
    with_c = [r for r in included if r.curvature is not None]
    out = []
    for measure in ("trace", "lambda_max"):
        vals = [float(r.curvature[measure]) for r in with_c]  # type: ignore[index]
        sel = [i for i, v in enumerate(vals) if math.isfinite(v) and v > 0]
        if not sel:
            continue
        rs = [with_c[i] for i in sel]
        vs = [vals[i] for i in sel]
        out.append(
            CurvatureTrend(
                measure=measure,
                points=_points(rs, vs),
                log_slope=_slope(rs, [math.log(v) for v in vs]),
                n_runs=len(rs),
            )
        )
    return out


@dataclass(frozen=True)
class ShiftTrend:
    """The decomposition of the test-minus-train gap on one evaluation set vs T.

    ``gap = vertical + shift_curvature + remainder`` (theory.md §3.3) at the trained weights.

    Attributes:
        eval_set: the evaluation set.
        kind: ``sampling``, ``test`` or ``domain``.
        terms: per term (``gap`` and :data:`~sgdtemp.analysis._records.SHIFT_TERMS`), the points
            per T.
        slopes: per term, its slope per doubling of T.
        quadratic_ratio: median over runs of the measured drop L̃(θ*) − L̃(θ̃*) over ½ sᵀH̃s
            (1 when the quadratic picture holds; NaN when not measured).
        n_runs: runs with the measurement.
    """

    eval_set: str
    kind: str
    terms: Mapping[str, tuple[TemperaturePoint, ...]]
    slopes: Mapping[str, Slope]
    quadratic_ratio: float
    n_runs: int

    @property
    def dominant_term(self) -> str:
        """The term with the largest mean magnitude over runs."""
        means = {
            t: float(np.mean([abs(v) for p in self.terms[t] for v in p.values] or [0.0]))
            for t in SHIFT_TERMS
            if t in self.terms
        }
        return max(means, key=lambda t: means[t]) if means else ""


def shift_vs_temperature(runs: Iterable[RunView]) -> list[ShiftTrend]:
    """The shift decomposition per evaluation set vs T (SDE-regime cells with a shift measured)."""
    included, _ = stable_runs(runs)
    names: list[str] = []
    for r in included:
        names.extend(n for n in r.shift if n not in names)
    out = []
    for name in names:
        rs = [r for r in included if name in r.shift]

        def term(t: str, rs: list[RunView] = rs, name: str = name) -> list[float]:
            return [float(r.shift[name].get(t, math.nan)) for r in rs]

        terms: dict[str, tuple[TemperaturePoint, ...]] = {}
        slopes: dict[str, Slope] = {}
        for t in ("gap", *SHIFT_TERMS):
            vals = term(t)
            if any(math.isfinite(v) for v in vals):
                terms[t] = _points(rs, vals)
                slopes[t] = _slope(rs, vals)
        ratios = [
            d / q
            for d, q in zip(term("drop"), term("shift_curvature"))
            if math.isfinite(d) and math.isfinite(q) and q > 0
        ]
        out.append(
            ShiftTrend(
                eval_set=name,
                kind=eval_kind(name),
                terms=terms,
                slopes=slopes,
                quadratic_ratio=float(np.median(ratios)) if ratios else math.nan,
                n_runs=len(rs),
            )
        )
    return out


test_loss_vs_temperature.__test__ = False  # type: ignore[attr-defined]  # not a pytest test
