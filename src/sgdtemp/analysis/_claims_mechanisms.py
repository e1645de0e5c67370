"""Claims C8–C11: the shift of minima, its curvature cost, and the three curvature mechanisms."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sgdtemp.analysis._claim import (
    DOES_NOT_HOLD,
    HOLDS,
    NO_CI,
    NOT_MEASURED,
    Claim,
    fmt,
    fmt_ci,
    slopes_verdict,
    span,
)
from sgdtemp.analysis._claims_loss import runs_phrase
from sgdtemp.analysis.decomposition import DecompositionTrend
from sgdtemp.analysis.regime import Regime, sweep_regime

if TYPE_CHECKING:
    from sgdtemp.analysis._analyze import Analysis

__all__ = [
    "mechanism_claims",
    "QUADRATIC_RATIO_RANGE",
    "DECOMPOSITION_RTOL",
]

#: The quadratic picture of a shift holds when the measured drop over ½ sᵀH̃s lies in this range.
QUADRATIC_RATIO_RANGE = (0.5, 2.0)
#: C10 holds when, on every eval set, the median relative error of the decomposition is at most
#: this.
DECOMPOSITION_RTOL = 0.10
# Left-out reasons quoted in a claim before "and k more".
_QUOTE = 3
_NAMES = {
    "shift_curvature": "shift-curvature",
    "bias_and_cross": "bias-curvature with cross",
    "covariance_curvature": "covariance-curvature",
}


def _left_out(d: DecompositionTrend) -> str:
    if not d.left_out:
        return ""
    quoted = "; ".join(d.left_out[:_QUOTE])
    more = f"; and {len(d.left_out) - _QUOTE} more" if len(d.left_out) > _QUOTE else ""
    return f"; left out {len(d.left_out)}: {quoted}{more}"


def _phrase(regime: Regime, decomposition: Sequence[DecompositionTrend]) -> str:
    """The runs phrase of a decomposition claim, from its eval set with the most runs used."""
    if not decomposition:
        return runs_phrase(regime, 0)
    best = max(decomposition, key=lambda d: d.n_runs)
    return runs_phrase(
        regime,
        best.n_runs,
        unusable=len(best.left_out),
        unusable_label=f"whose descents did not converge on {best.eval_set}",
    )


_RUNS_RULE = (
    "runs that became stationary, in cells of the SDE regime (lr·λ_max < 1), whose descents to θ* "
    "(the minimum of F = L + λ/2‖θ‖² reached from the stationary mean θ̄) and to θ̃* (of "
    "F̃ = L̃ + λ/2‖θ‖², from θ*) converged; a set whose descent did not converge is left out and "
    "counted"
)


def _shift_claim_c8(analysis: Analysis) -> Claim:
    lo, hi = QUADRATIC_RATIO_RANGE
    rule = (
        f"holds when, on every evaluation set, the median over runs of the measured drop "
        f"L̃(θ*) − L̃(θ̃*) over ½ sᵀH̃s lies in [{lo:g}, {hi:g}] (shift measured from the "
        f"final weights)"
    )
    claim = "A shift of minima costs curvature: L̃(θ*) − L̃(θ̃*) ≈ ½ sᵀH̃s"
    source = "abstract 0.1-4; theory §6.5"
    shifts = list(analysis.shift)
    if not shifts:
        why = "the shift was not measured"
        return Claim("C8", source, claim, NOT_MEASURED, rule, why, "fig-shift", "final epoch")
    ratios = [(s.eval_set, s.quadratic_ratio) for s in shifts]
    measured = "; ".join(f"{n}: {fmt(r)}" for n, r in ratios) + (
        f" (median over {shifts[0].n_runs} runs with the shift measured)"
    )
    if any(not math.isfinite(r) for _, r in ratios):
        verdict = NOT_MEASURED
    else:
        verdict = HOLDS if all(lo <= r <= hi for _, r in ratios) else DOES_NOT_HOLD
    return Claim("C8", source, claim, verdict, rule, measured, "fig-shift", "final epoch")


def _shift_claim_c9(analysis: Analysis, regime: Regime) -> Claim:
    claim = "Higher T lowers the shift-curvature ½ sᵀH̃s that the train→test shift picks up"
    source = "abstract 0.1-4, 0.1-7; theory §2.7, §6.6"
    slope_rule = (
        "holds when, on every evaluation set, the slope of ½ sᵀH̃s on log2 T (one intercept per "
        "seed, 95% CI) lies entirely below 0"
    )
    decomposition = [d for d in analysis.decomposition if "shift_curvature" in d.slopes]
    if decomposition:
        rule = (
            slope_rule + "; ½ sᵀH̃s of the stationary decomposition (theory §1.7, H̃ = ∇²F̃(θ̃*) "
            "includes λI): " + _RUNS_RULE
        )
        parts = [_phrase(regime, decomposition)]
        parts += [
            f"{d.eval_set} ({d.n_runs} runs): {span(d.terms['shift_curvature'])}; slope "
            f"{fmt(d.slopes['shift_curvature'].slope)} {fmt_ci(*d.slopes['shift_curvature'].ci)}"
            + _left_out(d)
            for d in decomposition
        ]
        verdict = slopes_verdict([d.slopes["shift_curvature"] for d in decomposition])
        if verdict == NOT_MEASURED:
            parts.append(NO_CI.strip(" ()"))
        return Claim(
            "C9", source, claim, verdict, rule, " | ".join(parts), "fig-mechanisms", "stationary"
        )
    rule = slope_rule + "; ½ sᵀH̃s of the shift measured from the final weights"
    with_sc = [s for s in analysis.shift if "shift_curvature" in s.slopes]
    if not with_sc:
        why = "the shift was not measured" if not analysis.shift else "no shift-curvature term"
        if analysis.decomposition:  # measured at stationarity, but no run usable
            why = _phrase(regime, analysis.decomposition) + ": no usable run (see C10); " + why
            return Claim(
                "C9", source, claim, NOT_MEASURED, rule, why, "fig-mechanisms", "stationary"
            )
        return Claim("C9", source, claim, NOT_MEASURED, rule, why, "fig-shift", "final epoch")
    parts = [
        f"{s.eval_set} ({s.n_runs} runs): {span(s.terms['shift_curvature'])}; slope "
        f"{fmt(s.slopes['shift_curvature'].slope)} {fmt_ci(*s.slopes['shift_curvature'].ci)}; "
        f"dominant term of the gap: {s.dominant_term}"
        for s in with_sc
    ]
    verdict = slopes_verdict([s.slopes["shift_curvature"] for s in with_sc])
    if verdict == NOT_MEASURED:
        parts.append(NO_CI.strip(" ()"))
    if analysis.decomposition:
        parts.insert(
            0, "the stationary decomposition has no usable run (see C10), so from the shift"
        )
    return Claim("C9", source, claim, verdict, rule, " | ".join(parts), "fig-shift", "final epoch")


def _decomposition_claim(analysis: Analysis, regime: Regime) -> Claim:
    claim = "The decomposition accounts for the measured expected test loss"
    source = "theory §1.3, §1.7; issue 12"
    rule = (
        f"holds when, on every eval set, the median over runs of |sum − measured| / |measured| "
        f"is at most {DECOMPOSITION_RTOL:.0%}: sum = vertical + shift-curvature + cross + "
        "bias-curvature + covariance-curvature (theory §1.7), measured = mean over the run's "
        "sampled stationary iterates θ_j of F̃(θ_j) − F(θ*); the sampling term δ̄ᵀH̃(s+b) and the "
        "cubic remainder lie outside the sum, so they count as error; " + _RUNS_RULE
    )
    trends = list(analysis.decomposition)
    if not trends:
        why = (
            "the decomposition was not measured ([measure.mechanisms] of a sweep trained until "
            "stationary)"
        )
        if regime.until_stationary:
            why = runs_phrase(regime, 0) + ": " + why
        return Claim("C10", source, claim, NOT_MEASURED, rule, why, "fig-mechanisms", "stationary")
    parts = [_phrase(regime, trends)]
    for d in trends:
        if d.n_runs == 0:
            parts.append(f"{d.eval_set}: no run usable{_left_out(d)}")
            continue
        parts.append(
            f"{d.eval_set}: median {d.median_relative_error:.1%} over {d.n_runs} runs (max "
            f"{max(d.relative_errors):.1%})" + _left_out(d)
        )
    usable = [d for d in trends if d.n_runs > 0]
    if not usable:
        verdict = NOT_MEASURED
    else:
        ok = all(d.median_relative_error <= DECOMPOSITION_RTOL for d in usable)
        verdict = HOLDS if ok else DOES_NOT_HOLD
        if len(usable) < len(trends):
            parts.append(f"{len(trends) - len(usable)} eval set(s) without a usable run left out")
    return Claim(
        "C10", source, claim, verdict, rule, " | ".join(parts), "fig-mechanisms", "stationary"
    )


def _dominance_claim(analysis: Analysis, regime: Regime) -> Claim:
    claim = "At the smallest T the shift-curvature is the largest of the three mechanisms"
    source = "abstract v3 (0.2-5); theory §1.6, §1.7"
    rule = (
        "holds when, on every eval set, at the smallest T with a usable measurement, the seed "
        "mean of the shift-curvature ½ sᵀH̃s is the largest in magnitude of the three "
        "mechanisms: shift-curvature, bias-curvature with the cross term (½ bᵀH̃b + sᵀH̃b: the "
        "cross term couples the shift and the bias and is O(T), so it is counted with the bias, "
        "as theory §1.3 groups them) and covariance-curvature ½ mean_j δ_jᵀH̃δ_j; the vertical "
        "term is not a curvature mechanism; " + _RUNS_RULE
    )
    trends = [d for d in analysis.decomposition if d.n_runs > 0]
    if not trends:
        if analysis.decomposition:
            why = _phrase(regime, analysis.decomposition) + ": no usable run (see C10)"
        else:
            why = "the decomposition was not measured"
            if regime.until_stationary:
                why = runs_phrase(regime, 0) + ": " + why
        return Claim("C11", source, claim, NOT_MEASURED, rule, why, "fig-mechanisms", "stationary")
    smallest = min(r.temperature for r in analysis.runs)
    parts = [_phrase(regime, trends)]
    verdicts = []
    for d in trends:
        t = d.temperatures[0]
        values = {}
        for m in _NAMES:
            p = d.at(m, t)
            values[m] = p.mean if p is not None else math.nan
        largest = max(values, key=lambda m: abs(values[m]) if math.isfinite(values[m]) else -1)
        verdicts.append(largest == "shift_curvature")
        bias, cross = d.at("bias_curvature", t), d.at("cross", t)
        n = d.at("measured", t)
        note = ""
        if not math.isclose(t, smallest, rel_tol=1e-6):
            note = f" (the sweep's smallest T is {smallest:.3g})"
        parts.append(
            f"{d.eval_set} at T={t:.3g}{note}, {n.n_runs if n else 0} runs: shift-curvature "
            f"{fmt(values['shift_curvature'])}, bias-curvature with cross "
            f"{fmt(values['bias_and_cross'])} (bias {fmt(bias.mean if bias else math.nan)}, "
            f"cross {fmt(cross.mean if cross else math.nan)}), covariance-curvature "
            f"{fmt(values['covariance_curvature'])}: {_NAMES[largest]} largest"
        )
    verdict = HOLDS if all(verdicts) else DOES_NOT_HOLD
    return Claim(
        "C11", source, claim, verdict, rule, " | ".join(parts), "fig-mechanisms", "stationary"
    )


def mechanism_claims(analysis: Analysis) -> list[Claim]:
    """C8 (the quadratic cost of a shift), C9 (shift-curvature falls with T), C10, C11."""
    regime = analysis.regime or sweep_regime(analysis.runs)
    return [
        _shift_claim_c8(analysis),
        _shift_claim_c9(analysis, regime),
        _decomposition_claim(analysis, regime),
        _dominance_claim(analysis, regime),
    ]
