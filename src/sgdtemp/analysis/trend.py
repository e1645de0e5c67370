r"""Test loss, curvature and the shift decomposition as functions of the temperature $T$.

**Where test losses are compared.** A fixed epoch count is not a fair point: at fixed epochs the
SDE time $t = eNT$ grows with $T$, so low-$T$ runs are still training and look worse for that
reason alone. Runs are compared

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
]

#: A train loss is on a plateau when it moved by less than this fraction of its final value ...
PLATEAU_RTOL = 0.05
#: ... over this fraction of the epochs (at least 2 epochs).
PLATEAU_WINDOW = 0.25


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
        mode: ``"plateau"`` or ``"matched train loss"`` (module docstring).
        target_train_loss: $L^\star$ for the matched mode (NaN for plateau).
        points: per T, the compared loss.
        slope: slope of the compared loss per doubling of T (seed blocks).
        final_points: per T, the final-epoch loss (reference only).
        final_slope: its slope (reference only).
        excess_slope: for ``corrupt:`` sets, the slope of (this loss − test loss): the part of
            the trend due to the domain shift alone (None otherwise).
        n_plateau: runs on a train-loss plateau.
        n_runs: runs compared.
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
        eval_sets: the sets (default: every non-train set with curves).

    Returns:
        The trends, and the cells left out (see :func:`stable_runs`).
    """
    included, dropped = stable_runs(runs)
    included = [r for r in included if "train" in r.loss and np.all(np.isfinite(r.loss["train"]))]
    if not included:
        return [], dropped
    if eval_sets is None:
        names: list[str] = []
        for r in included:
            names.extend(n for n in r.loss if n != "train" and n not in names)
        eval_sets = names
    n_plateau = sum(has_plateau(r) for r in included)
    plateau = n_plateau == len(included)
    target = max(float(np.min(r.loss["train"])) for r in included)
    trends = []
    for name in eval_sets:
        finals = [float(r.loss[name][-1]) if name in r.loss else math.nan for r in included]
        if plateau:
            values, epochs = finals, [float(r.epochs[-1]) for r in included]
        else:
            pairs = [_at_train_loss(r, target, name) for r in included]
            values, epochs = [p[0] for p in pairs], [p[1] for p in pairs]
        excess = None
        if name.startswith("corrupt:"):
            if plateau:
                ref = [
                    float(r.loss["test"][-1]) if "test" in r.loss else math.nan for r in included
                ]
            else:
                ref = [_at_train_loss(r, target, "test")[0] for r in included]
            excess = _slope(included, [v - w for v, w in zip(values, ref)])
        trends.append(
            TestLossTrend(
                eval_set=name,
                kind=eval_kind(name),
                mode="plateau" if plateau else "matched train loss",
                target_train_loss=math.nan if plateau else target,
                points=_points(included, values, epochs),
                slope=_slope(included, values),
                final_points=_points(included, finals),
                final_slope=_slope(included, finals),
                excess_slope=excess,
                n_plateau=n_plateau,
                n_runs=len(included),
            )
        )
    return trends, dropped


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
