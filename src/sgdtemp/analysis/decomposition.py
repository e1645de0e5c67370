r"""The three curvature mechanisms of the expected eval loss vs T, from stationary runs (§1.7).

A run trained until stationary with ``[measure.mechanisms]`` records, per eval set, the terms of

$$\overline{\tilde F(\theta_j)} - F(\theta^*) \approx
\text{vertical} + \text{shift-curvature} + \text{cross} + \text{bias-curvature}
+ \text{covariance-curvature}$$

(:mod:`sgdtemp.shift.mechanisms`), their sum and the measured left side. Per eval set and
temperature, :func:`decomposition_vs_temperature` gives the seed means of every term (each seed
averaged over its batch sizes, as for the test loss), their slopes per doubling of $T$, and per
run the relative error $|\text{sum} - \text{measured}| / |\text{measured}|$ of the quadratic
picture (claim C10; the sampling term and the cubic remainder are outside the sum, so they count
as error).

**Which runs.** Runs of the cells in the SDE regime (:func:`~sgdtemp.analysis.trend.stable_runs`)
that became stationary and whose decomposition was measured. A run whose descent to the train
minimum did not converge is left out on every set, a set whose own descent did not converge is
left out on that set; both are listed with the solver's reason
(:attr:`DecompositionTrend.left_out`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sgdtemp.analysis._records import MECHANISM_TERMS, RunView, eval_kind
from sgdtemp.analysis._stats import Slope
from sgdtemp.analysis.trend import TemperaturePoint, _points, _slope, stable_runs

__all__ = [
    "DecompositionTrend",
    "decomposition_vs_temperature",
    "MECHANISMS",
    "DECOMPOSITION_KEYS",
    "Z95",
]

#: The three mechanisms compared by claim C11 (the bias mechanism includes the cross term
#: ``bias_and_cross`` = cross + bias-curvature, as theory.md §1.3 groups them).
MECHANISMS = ("shift_curvature", "bias_and_cross", "covariance_curvature")

#: Keys of one row of ``analysis.json``'s ``"decomposition"`` list (seed means), in order.
DECOMPOSITION_KEYS = (
    "eval_set",
    "temperature",
    "runs",
    *MECHANISM_TERMS,
    "sum",
    "measured",
)

#: Half-width of a 95 % normal interval in standard errors (error bars with a single seed).
Z95 = 1.959963984540054

# Every series the trend carries: the five terms, their sum, the measured side, what lies
# outside the sum, and the bias mechanism with its cross term.
_SERIES = (
    *MECHANISM_TERMS,
    "sum",
    "measured",
    "sampling_term",
    "remainder",
    "bias_and_cross",
    "eval_loss_mean",
)


def _key(t: float) -> float:
    return float(f"{t:.6g}")


@dataclass(frozen=True)
class DecompositionTrend:
    """The decomposition of one eval set's expected objective vs T.

    Attributes:
        eval_set: the eval set.
        kind: ``sampling``, ``test`` or ``domain``.
        terms: per series (the five terms, ``sum``, ``measured``, ``sampling_term``,
            ``remainder``, ``bias_and_cross`` and ``eval_loss_mean``, the expected data loss),
            the seed means per T.
        slopes: per series, its slope per doubling of T (one intercept per seed).
        measured_error: per point of ``terms["measured"]``, the half-width of its 95 % interval:
            Student-t over seeds, or with one seed :data:`Z95` times the standard error of the
            mean combined from the runs' own standard errors (over their iterates).
        relative_errors: per run used, ``|sum − measured| / |measured|``.
        n_runs: runs used.
        left_out: one line per run left out (descent not converged, non-finite terms), with
            the reason.
        n_skipped: stationary runs of the SDE regime whose decomposition was not measured
            (e.g. their seed was not asked for).
    """

    eval_set: str
    kind: str
    terms: Mapping[str, tuple[TemperaturePoint, ...]]
    slopes: Mapping[str, Slope]
    measured_error: tuple[float, ...]
    relative_errors: tuple[float, ...]
    n_runs: int
    left_out: tuple[str, ...] = ()
    n_skipped: int = 0

    @property
    def median_relative_error(self) -> float:
        """Median over runs of ``|sum − measured| / |measured|`` (NaN without runs)."""
        return float(np.median(self.relative_errors)) if self.relative_errors else math.nan

    @property
    def temperatures(self) -> tuple[float, ...]:
        """The temperatures with a measurement, ascending."""
        return tuple(p.temperature for p in self.terms.get("measured", ()))

    def at(self, series: str, temperature: float) -> TemperaturePoint | None:
        """The point of ``series`` at ``temperature`` (None when absent)."""
        return next(
            (p for p in self.terms.get(series, ()) if p.temperature == _key(temperature)), None
        )

    def rows(self) -> list[dict[str, Any]]:
        """The rows of ``analysis.json``'s ``"decomposition"``: seed means per T.

        Each row has :data:`DECOMPOSITION_KEYS` and also ``seeds``, ``measured_error``,
        ``sampling_term``, ``remainder`` and ``eval_loss_mean``.
        """
        out = []
        for i, t in enumerate(self.temperatures):
            measured = self.at("measured", t)
            assert measured is not None
            row: dict[str, Any] = {
                "eval_set": self.eval_set,
                "temperature": t,
                "runs": measured.n_runs,
            }
            for series in (*MECHANISM_TERMS, "sum", "measured"):
                p = self.at(series, t)
                row[series] = p.mean if p is not None else math.nan
            row["seeds"] = measured.n_seeds
            row["measured_error"] = self.measured_error[i]
            for series in ("sampling_term", "remainder", "eval_loss_mean"):
                p = self.at(series, t)
                row[series] = p.mean if p is not None else math.nan
            out.append(row)
        return out


def _describe(run: RunView) -> str:
    return f"lr={run.lr:.4g} B={run.batch_size} seed {run.seed}"


def _measured_error(runs: list[RunView], name: str, point: TemperaturePoint) -> float:
    lo, hi = point.ci
    if math.isfinite(lo) and math.isfinite(hi):
        return (hi - lo) / 2
    at_t = [r for r in runs if _key(r.temperature) == point.temperature]
    se = [r.mechanisms.evals[name]["measured_se"] for r in at_t if r.mechanisms is not None]
    se = [s for s in se if math.isfinite(s)]
    if not se or len(se) != len(at_t):
        return math.nan
    return Z95 * math.sqrt(sum(s * s for s in se)) / len(se)


def decomposition_vs_temperature(runs: Iterable[RunView]) -> list[DecompositionTrend]:
    """The decomposition per eval set vs T (module docstring for the runs used).

    Args:
        runs: the runs of one sweep.

    Returns:
        One trend per eval set that some stationary run measured (empty when none did).
    """
    included, _ = stable_runs(runs)
    measured = [r for r in included if r.stationary_reached and r.mechanisms is not None]
    ok = [r for r in measured if r.mechanisms is not None and r.mechanisms.status == "ok"]
    n_skipped = len(measured) - len(ok)
    names: list[str] = []
    for r in ok:
        assert r.mechanisms is not None
        names.extend(n for n in r.mechanisms.evals if n not in names)
    out = []
    for name in names:
        used: list[RunView] = []
        left: list[str] = []
        for r in ok:
            assert r.mechanisms is not None
            problem = r.mechanisms.problem(name)
            if problem is None:
                used.append(r)
            else:
                left.append(f"{_describe(r)}: {problem}")
        if not used:
            out.append(
                DecompositionTrend(
                    eval_set=name,
                    kind=eval_kind(name),
                    terms={},
                    slopes={},
                    measured_error=(),
                    relative_errors=(),
                    n_runs=0,
                    left_out=tuple(left),
                    n_skipped=n_skipped,
                )
            )
            continue
        evals = [r.mechanisms.evals[name] for r in used if r.mechanisms is not None]
        series: dict[str, list[float]] = {s: [e.get(s, math.nan) for e in evals] for s in _SERIES}
        series["bias_and_cross"] = [e["bias_curvature"] + e["cross"] for e in evals]
        terms = {s: _points(used, v) for s, v in series.items() if any(map(math.isfinite, v))}
        slopes = {s: _slope(used, series[s]) for s in terms}
        rel = tuple(
            abs(e["sum"] - e["measured"]) / abs(e["measured"]) if e["measured"] != 0 else math.inf
            for e in evals
        )
        out.append(
            DecompositionTrend(
                eval_set=name,
                kind=eval_kind(name),
                terms=terms,
                slopes=slopes,
                measured_error=tuple(_measured_error(used, name, p) for p in terms["measured"]),
                relative_errors=rel,
                n_runs=len(used),
                left_out=tuple(left),
                n_skipped=n_skipped,
            )
        )
    return out
