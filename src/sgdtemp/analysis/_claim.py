"""A claim with its verdict, rule, numbers and comparison point; the text helpers of the rules."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sgdtemp.analysis._stats import Slope
from sgdtemp.analysis.trend import COMPARED_AT, TemperaturePoint

__all__ = [
    "Claim",
    "VERDICTS",
    "HOLDS",
    "DOES_NOT_HOLD",
    "NOT_MEASURED",
    "CLAIM_COMPARED_AT",
    "EPOCH_CURVES",
]

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold at this scale"
NOT_MEASURED = "not measured"
#: The three verdicts.
VERDICTS = (HOLDS, DOES_NOT_HOLD, NOT_MEASURED)
#: ``compared_at`` of the invariance claims, which score whole loss-vs-epoch curves rather than
#: losses at one point.
EPOCH_CURVES = "epoch curves"
#: What a claim's ``compared_at`` may be: where its losses are compared
#: (:data:`~sgdtemp.analysis.trend.COMPARED_AT`), or whole curves; None only for a claim
#: without any measurement (no sweep).
CLAIM_COMPARED_AT = (*COMPARED_AT, EPOCH_CURVES)


@dataclass(frozen=True)
class Claim:
    """One claim of the paper and what the measurements say about it.

    Attributes:
        id: short identifier (``"C1"``; ``"TM3"`` for two-minima checks, ``"S2"`` for
            stationary-law checks).
        source: where the claim comes from (theory.md section, abstract item).
        claim: the claim.
        verdict: one of :data:`VERDICTS`.
        rule: how the verdict follows from the measurements.
        measured: the numbers behind the verdict.
        figure: the report anchor of the figure or table that shows it (None: none).
        compared_at: where the numbers behind the verdict were taken (one of
            :data:`CLAIM_COMPARED_AT`): ``"stationary"`` (stationary expectations, or a
            stationary law), ``"matched train loss"``, ``"final epoch"``, or ``"epoch
            curves"``; None for a claim with no measurement at all.
    """

    id: str
    source: str
    claim: str
    verdict: str
    rule: str
    measured: str
    figure: str | None = None
    compared_at: str | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")
        if self.compared_at is not None and self.compared_at not in CLAIM_COMPARED_AT:
            raise ValueError(
                f"compared_at must be one of {CLAIM_COMPARED_AT} or None, got {self.compared_at!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The claim as JSON values."""
        return dict(vars(self))


def fmt(x: float) -> str:
    """A number in 3 significant digits, ``n/a`` when not finite."""
    return "n/a" if not math.isfinite(x) else f"{x:.3g}"


def fmt_ci(lo: float, hi: float) -> str:
    """``[lo, hi]`` in 3 significant digits, ``[n/a]`` when not finite."""
    return "[n/a]" if not (math.isfinite(lo) and math.isfinite(hi)) else f"[{lo:.3g}, {hi:.3g}]"


def span(points: Sequence[TemperaturePoint]) -> str:
    """``"0.42 (T=0.001) → 0.38 (T=0.004)"``: the first and last temperature's means."""
    if not points:
        return "no values"
    lo, hi = points[0], points[-1]
    return f"{lo.mean:.4g} (T={lo.temperature:.3g}) → {hi.mean:.4g} (T={hi.temperature:.3g})"


def slopes_verdict(slopes: Sequence[Slope]) -> str:
    """The verdict on "every slope is below 0".

    HOLDS when every slope's CI lies below 0; NOT_MEASURED when some slope has no CI (fewer than
    two temperatures, or no residual degrees of freedom); DOES_NOT_HOLD otherwise.
    """
    if not slopes or any(not (math.isfinite(s.ci[0]) and math.isfinite(s.ci[1])) for s in slopes):
        return NOT_MEASURED
    return HOLDS if all(s.negative for s in slopes) else DOES_NOT_HOLD


#: Appended to a measurement whose slope has no confidence interval.
NO_CI = " (no confidence interval: it needs ≥ 2 temperatures and more runs than parameters)"
