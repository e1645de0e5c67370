"""The paper's claims with verdicts computed from the measurements, each with its rule.

Every verdict is one of :data:`VERDICTS` and follows from the numbers by the rule written in the
claim's ``rule`` field; nothing here is hard-coded to come out one way. Claims of theory.md §0.1
and §6 that the sweep measures are judged from an :class:`~sgdtemp.analysis.Analysis`; the
synthetic two-minima study and the stationary-law checks bring their own ``checks`` lists
(``{"claim", "holds", "detail"}``), whose rules are stated in the claim text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sgdtemp.analysis._stats import Slope
from sgdtemp.analysis.invariance import ALPHA, COLLAPSE_FACTOR, LineScore
from sgdtemp.analysis.trend import PLATEAU_RTOL, TemperaturePoint, TestLossTrend

if TYPE_CHECKING:
    from sgdtemp.analysis._analyze import Analysis

__all__ = [
    "Claim",
    "VERDICTS",
    "HOLDS",
    "DOES_NOT_HOLD",
    "NOT_MEASURED",
    "sweep_claims",
    "checks_claims",
    "all_claims",
    "QUADRATIC_RATIO_RANGE",
]

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold at this scale"
NOT_MEASURED = "not measured"
#: The three verdicts.
VERDICTS = (HOLDS, DOES_NOT_HOLD, NOT_MEASURED)
#: The quadratic picture of a shift holds when the measured drop over ½ sᵀH̃s lies in this range.
QUADRATIC_RATIO_RANGE = (0.5, 2.0)
# Metrics whose curves the invariance verdicts use.
_INVARIANCE_METRICS = ("train", "test")


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
    """

    id: str
    source: str
    claim: str
    verdict: str
    rule: str
    measured: str
    figure: str | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")

    def to_dict(self) -> dict[str, Any]:
        """The claim as JSON values."""
        return dict(vars(self))


def _f(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.3g}"


def _ci(lo: float, hi: float) -> str:
    return "[n/a]" if not (math.isfinite(lo) and math.isfinite(hi)) else f"[{lo:.3g}, {hi:.3g}]"


def _lines_text(lines: Sequence[LineScore]) -> str:
    """One compact phrase per line (metrics grouped): κ per metric, spreads, why it breaks."""
    by_line: dict[tuple[str, float], list[LineScore]] = {}
    for ln in lines:
        by_line.setdefault((ln.kind, ln.value), []).append(ln)
    parts = []
    for group in by_line.values():
        first = group[0]
        scored = [ln for ln in group if ln.differs is not None]
        if not scored:
            parts.append(f"{first.label}: not scored ({first.why})")
            continue
        kap = ", ".join(
            f"{ln.kappa:.2f}{'*' if ln.differs else ''} ({ln.metric}, p={ln.p_value:.2g})"
            for ln in scored
        )
        text = f"{first.label}: κ {kap}"
        ref = next((ln for ln in scored if ln.metric == "test"), scored[0])
        text += (
            f"; {ref.metric} final-loss spread across cells {ref.spread_cells:.3g} vs seed "
            f"{ref.spread_seed:.3g}"
        )
        broken = [ln for ln in scored if ln.differs]
        if broken and first.kind == "iso-T":
            text += f" — {broken[0].why}"
        elif first.kind == "iso-T":
            large = [ln for ln in group if ln.differs_stable is not None]
            if large:
                kap_s = ", ".join(
                    f"{ln.kappa_stable:.2f}{'*' if ln.differs_stable else ''} ({ln.metric})"
                    for ln in large
                )
                text += f"; with its 1 ≤ lr·λ_max < 2 cells κ {kap_s}"
        elif first.kind != "iso-T" and len(first.scored_cells) > 1:
            temps = [c.temperature for c in first.scored_cells]
            text += f" (T ×{max(temps) / min(temps):.3g})"
        parts.append(text)
    return " | ".join(parts)


def _departs(ln: LineScore, alpha: float) -> bool:
    return bool(ln.kappa > COLLAPSE_FACTOR and ln.p_value < alpha)


def _invariance_claims(analysis: Analysis) -> list[Claim]:
    """C1 (iso-T lines collapse) and C2 (fixed-lr controls do not).

    C1 is "no departure on any line": it fails when some scored iso-T line departs on some
    metric at the Bonferroni level ALPHA / m (m scored line × metric tests), which keeps the
    chance of a false "does not hold" at ALPHA. C2 is "every control line differs": an
    intersection-union test, each line (on any metric) at ALPHA, so no correction is needed.
    """
    inv = analysis.invariance
    core = (
        "κ = √(MS between cells / MS between seeds within cells) on the loss-vs-epoch curves "
        f"({', '.join(_INVARIANCE_METRICS)} loss, epochs ≥ 1); cells in the SDE regime only "
        "(every seed trained, measured lr·λ_max < 1; 1 ≤ lr·λ_max < 2 reported beside, ≥ 2 "
        "unstable); a line is scored with ≥ 2 such cells and ≥ 2 common seeds"
    )
    iso = [ln for ln in inv.lines if ln.kind == "iso-T" and ln.metric in _INVARIANCE_METRICS]
    iso_scored = [ln for ln in iso if ln.differs is not None]
    alpha1 = ALPHA / max(1, len(iso_scored))
    rule1 = (
        f"holds when no scored iso-T line departs: κ > {COLLAPSE_FACTOR:g} with p < "
        f"{ALPHA:g}/m (Bonferroni over the m line × metric tests; here m = {len(iso_scored)}). "
        + core
    )
    claim1 = (
        "Temperature invariance: runs with the same T = lr/B have the same loss-vs-epoch "
        "curves, whatever the batch size"
    )
    src1 = "abstract 0.1-6; theory §2.4, §6.1"
    if not iso_scored:
        why = _lines_text(iso) if iso else "no iso-T line with ≥ 2 cells"
        c1 = Claim("C1", src1, claim1, NOT_MEASURED, rule1, f"not scored: {why}", "fig-curves")
    else:
        departs = [ln for ln in iso_scored if _departs(ln, alpha1)]
        measured = (
            f"(* = differs at p < {ALPHA:g}) "
            + _lines_text(iso)
            + f" | departures at p < {alpha1:.2g}: "
            + (", ".join(f"{ln.label} ({ln.metric})" for ln in departs) or "none")
        )
        across = [ln for ln in inv.lines if ln.kind == "fixed-B" and ln.differs is not None]
        if across:
            kap = [ln.kappa for ln in across]
            measured += f" | across T at fixed B: κ from {min(kap):.2f} to {max(kap):.2f}"
        verdict = DOES_NOT_HOLD if departs else HOLDS
        c1 = Claim("C1", src1, claim1, verdict, rule1, measured, "fig-curves")

    ctrl = [ln for ln in inv.lines if ln.kind == "fixed-lr" and ln.metric in _INVARIANCE_METRICS]
    by_line: dict[float, list[LineScore]] = {}
    for ln in ctrl:
        if ln.differs is not None:
            by_line.setdefault(ln.value, []).append(ln)
    rule2 = (
        f"holds when every scored fixed-lr line differs on some curve: κ > {COLLAPSE_FACTOR:g} "
        f"with p < {ALPHA:g} (an intersection-union test: each line at {ALPHA:g}). " + core
    )
    claim2 = "Control: at a fixed lr, changing the batch size (hence T) changes the curves"
    src2 = "theory §2.4 (off-line controls), §3.3"
    if not by_line:
        why = _lines_text(ctrl) if ctrl else "no fixed-lr line with ≥ 2 cells"
        c2 = Claim("C2", src2, claim2, NOT_MEASURED, rule2, f"not scored: {why}", "fig-control")
    else:
        ok = all(any(_departs(ln, ALPHA) for ln in group) for group in by_line.values())
        measured = f"(* = differs at p < {ALPHA:g}) " + _lines_text(ctrl)
        c2 = Claim(
            "C2", src2, claim2, HOLDS if ok else DOES_NOT_HOLD, rule2, measured, "fig-control"
        )
    return [c1, c2]


def _slopes_verdict(slopes: Sequence[Slope]) -> str:
    """The verdict on "every slope is below 0".

    HOLDS when every slope's CI lies below 0; NOT_MEASURED when some slope has no CI (fewer than
    two temperatures, or no residual degrees of freedom); DOES_NOT_HOLD otherwise.
    """
    if not slopes or any(not (math.isfinite(s.ci[0]) and math.isfinite(s.ci[1])) for s in slopes):
        return NOT_MEASURED
    return HOLDS if all(s.negative for s in slopes) else DOES_NOT_HOLD


_NO_CI = " (no confidence interval: it needs ≥ 2 temperatures and more runs than parameters)"


def _span(points: Sequence[TemperaturePoint]) -> str:
    """``"0.42 (T=0.001) → 0.38 (T=0.004)"``: the first and last temperature's means."""
    if not points:
        return "no values"
    lo, hi = points[0], points[-1]
    return f"{lo.mean:.4g} (T={lo.temperature:.3g}) → {hi.mean:.4g} (T={hi.temperature:.3g})"


def _trend_text(t: TestLossTrend) -> str:
    mode = t.mode
    if t.mode == "matched train loss":
        mode += f" {t.target_train_loss:.3g}"
    return (
        f"{t.eval_set} at {mode}: {_span(t.points)}; slope per doubling of T {_f(t.slope.slope)} "
        f"{_ci(*t.slope.ci)}; lowest at T={t.best_temperature:.3g}"
    )


def _comparison_rule() -> str:
    return (
        "slope of the loss on log2 T (one intercept per seed, 95% CI) entirely below 0; losses "
        f"compared on a train-loss plateau (moved < {PLATEAU_RTOL:.0%} over the last quarter of "
        "the epochs) when every run has one, else at the lowest train loss every run reaches; "
        "never at a fixed epoch; cells in the SDE regime (lr·λ_max < 1) only"
    )


def _trend_claims(analysis: Analysis) -> list[Claim]:
    trends = {t.eval_set: t for t in analysis.test_loss}
    dropped = f" Left out: {'; '.join(analysis.dropped)}." if analysis.dropped else ""
    out = []

    def one(cid: str, claim: str, source: str, names: Sequence[str], what: str) -> Claim:
        rule = f"holds when the {what} has a {_comparison_rule()}"
        present = [trends[n] for n in names if n in trends]
        if not present:
            return Claim(
                cid,
                source,
                claim,
                NOT_MEASURED,
                rule,
                "no such evaluation set",
                figure="fig-test-vs-t",
            )
        verdict = _slopes_verdict([t.slope for t in present])
        measured = " | ".join(_trend_text(t) for t in present)
        if verdict == NOT_MEASURED:
            measured += _NO_CI
        ref = present[0]
        measured += (
            f" | (reference only, final epoch: slope {_f(ref.final_slope.slope)} "
            f"{_ci(*ref.final_slope.ci)}; {ref.n_plateau} of {ref.n_runs} runs on a plateau)"
        )
        return Claim(
            cid,
            source,
            claim,
            verdict,
            rule,
            measured + dropped,
            figure="fig-test-vs-t",
        )

    out.append(
        one(
            "C3",
            "Test loss decreases as T increases (test set)",
            "abstract 0.1-7, 0.1-8b; theory §2.7, §6.7",
            ["test"],
            "test loss",
        )
    )
    out.append(
        one(
            "C4",
            "The improvement appears under sampling shift (held-out split of the training set)",
            "abstract 0.1-3, 0.1-8c; theory §6.8",
            ["heldout"],
            "held-out loss",
        )
    )
    corrupt = sorted(n for n in trends if n.startswith("corrupt:"))
    out.append(
        one(
            "C5",
            "The improvement appears under domain shift (corrupted test set), at "
            "every severity measured",
            "abstract 0.1-8c; theory §6.8",
            corrupt,
            "loss on every corrupted set",
        )
    )

    rule6 = (
        "holds when, on every corrupted set, the slope of (corrupted − clean test loss) on "
        "log2 T has a 95% CI entirely below 0 (the domain shift itself shrinks with T); the "
        "dominant driver is the larger of the held-out improvement and that domain-only "
        "improvement per doubling of T"
    )
    claim6 = "Domain shift drives part of the improvement, beyond sampling shift"
    excess = [(n, trends[n].excess_slope) for n in corrupt if trends[n].excess_slope is not None]
    held = trends.get("heldout")
    if not excess:
        out.append(
            Claim(
                "C6",
                "abstract 0.1-8c; theory §6.8",
                claim6,
                NOT_MEASURED,
                rule6,
                "no corrupted evaluation set",
                figure="fig-test-vs-t",
            )
        )
    else:
        v6 = _slopes_verdict([s for _, s in excess if s is not None])
        parts = [f"{n}: domain-only slope {_f(s.slope)} {_ci(*s.ci)}" for n, s in excess if s]
        if v6 == NOT_MEASURED:
            parts.append(_NO_CI.strip(" ()"))
        if held is not None and v6 != NOT_MEASURED:
            samp = -held.slope.slope
            dom = max(-s.slope for _, s in excess if s is not None)
            if max(samp, dom) <= 0:
                which = "neither loss improves with T"
            else:
                which = ("sampling shift" if samp >= dom else "domain shift") + " dominates"
            parts.append(
                f"held-out (sampling) improvement per doubling {_f(samp)}, largest domain-only "
                f"improvement {_f(dom)}: {which}"
            )
        out.append(
            Claim(
                "C6",
                "abstract 0.1-8c; theory §6.8",
                claim6,
                v6,
                rule6,
                " | ".join(parts),
                figure="fig-test-vs-t",
            )
        )
    return out


def _curvature_claim(analysis: Analysis) -> Claim:
    rule = (
        "holds when the slopes of log trace and log λ_max on log2 T (one intercept per seed, "
        "95% CI) both lie entirely below 0; cells in the SDE regime (lr·λ_max < 1), measured "
        "after the last epoch"
    )
    claim = "Higher T selects lower curvature: Hessian trace and λ_max of the trained model fall"
    source = "abstract 0.1-7; theory §6.4"
    trends = {c.measure: c for c in analysis.curvature}
    if not trends:
        return Claim(
            "C7",
            source,
            claim,
            NOT_MEASURED,
            rule,
            "curvature was not measured",
            figure="fig-curvature",
        )
    missing = [m for m in ("trace", "lambda_max") if m not in trends]
    parts = [
        f"{m}: {_span(c.points)}; log-slope per doubling of T {_f(c.log_slope.slope)} "
        f"{_ci(*c.log_slope.ci)}"
        for m, c in trends.items()
    ]
    if missing:
        return Claim(
            "C7",
            source,
            claim,
            NOT_MEASURED,
            rule,
            f"missing {', '.join(missing)}; " + " | ".join(parts),
            figure="fig-curvature",
        )
    verdict = _slopes_verdict([c.log_slope for c in trends.values()])
    if verdict == NOT_MEASURED:
        parts.append(_NO_CI.strip(" ()"))
    return Claim(
        "C7",
        source,
        claim,
        verdict,
        rule,
        " | ".join(parts),
        figure="fig-curvature",
    )


def _shift_claims(analysis: Analysis) -> list[Claim]:
    lo, hi = QUADRATIC_RATIO_RANGE
    rule8 = (
        f"holds when, on every evaluation set, the median over runs of the measured drop "
        f"L̃(θ*) − L̃(θ̃*) over ½ sᵀH̃s lies in [{lo:g}, {hi:g}]"
    )
    claim8 = "A shift of minima costs curvature: L̃(θ*) − L̃(θ̃*) ≈ ½ sᵀH̃s"
    rule9 = (
        "holds when, on every evaluation set, the slope of ½ sᵀH̃s on log2 T (one intercept per "
        "seed, 95% CI) lies entirely below 0"
    )
    claim9 = "Higher T lowers the shift-curvature ½ sᵀH̃s that the train→test shift picks up"
    src8, src9 = "abstract 0.1-4; theory §6.5", "abstract 0.1-4, 0.1-7; theory §2.7, §6.6"
    shifts = list(analysis.shift)
    if not shifts:
        return [
            Claim(
                "C8",
                src8,
                claim8,
                NOT_MEASURED,
                rule8,
                "the shift was not measured",
                figure="fig-shift",
            ),
            Claim(
                "C9",
                src9,
                claim9,
                NOT_MEASURED,
                rule9,
                "the shift was not measured",
                figure="fig-shift",
            ),
        ]
    ratios = [(s.eval_set, s.quadratic_ratio) for s in shifts]
    measured8 = "; ".join(f"{n}: {_f(r)}" for n, r in ratios) + (
        f" (median over {shifts[0].n_runs} runs with the shift measured)"
    )
    if any(not math.isfinite(r) for _, r in ratios):
        v8 = NOT_MEASURED
    else:
        v8 = HOLDS if all(lo <= r <= hi for _, r in ratios) else DOES_NOT_HOLD
    with_sc = [s for s in shifts if "shift_curvature" in s.slopes]
    parts9 = [
        f"{s.eval_set} ({s.n_runs} runs): {_span(s.terms['shift_curvature'])}; slope "
        f"{_f(s.slopes['shift_curvature'].slope)} {_ci(*s.slopes['shift_curvature'].ci)}; "
        f"dominant term of the gap: {s.dominant_term}"
        for s in with_sc
    ]
    v9 = _slopes_verdict([s.slopes["shift_curvature"] for s in with_sc])
    if v9 == NOT_MEASURED and with_sc:
        parts9.append(_NO_CI.strip(" ()"))
    return [
        Claim("C8", src8, claim8, v8, rule8, measured8, figure="fig-shift"),
        Claim(
            "C9",
            src9,
            claim9,
            v9,
            rule9,
            " | ".join(parts9) or "no shift-curvature term",
            figure="fig-shift",
        ),
    ]


def sweep_claims(analysis: Analysis) -> list[Claim]:
    """The claims the η × B sweep measures (C1–C9), with verdicts."""
    return [
        *_invariance_claims(analysis),
        *_trend_claims(analysis),
        _curvature_claim(analysis),
        *_shift_claims(analysis),
    ]


def checks_claims(
    checks: Sequence[Mapping[str, Any]] | None,
    *,
    prefix: str,
    source: str,
    figure: str | None,
    missing: str,
) -> list[Claim]:
    """Claims from a study's ``checks`` list (``{"claim", "holds", "detail"}``).

    ``holds`` True gives "holds", False "does not hold at this scale", None "not measured".
    Without checks, one "not measured" row says why.

    Example:
        >>> [c.verdict for c in checks_claims(
        ...     [{"claim": "a", "holds": True, "detail": ""}, {"claim": "b", "holds": None,
        ...      "detail": ""}], prefix="TM", source="§4", figure=None, missing="")]
        ['holds', 'not measured']
    """
    if not checks:
        return [
            Claim(
                f"{prefix}0",
                source,
                missing,
                NOT_MEASURED,
                "the study did not run",
                "no results found",
                figure,
            )
        ]
    out = []
    for i, check in enumerate(checks, start=1):
        holds = check.get("holds")
        verdict = NOT_MEASURED if holds is None else (HOLDS if holds else DOES_NOT_HOLD)
        rule = str(check.get("rule") or "the threshold stated in the claim, computed by the study")
        out.append(
            Claim(
                f"{prefix}{i}",
                source,
                str(check.get("claim", "")),
                verdict,
                rule,
                str(check.get("detail", "")),
                figure,
            )
        )
    return out


def all_claims(
    analysis: Analysis | None,
    *,
    two_minima: Mapping[str, Any] | None = None,
    stationary: Mapping[str, Any] | None = None,
) -> list[Claim]:
    """Every claim: the sweep's, the two-minima study's and the stationary-law checks'.

    Args:
        analysis: the sweep analysis (None: the sweep claims are "not measured").
        two_minima: the two-minima ``summary.json`` (its ``checks``).
        stationary: the stationary-law checks summary (its ``checks``).

    Example:
        >>> [(c.id, c.verdict) for c in all_claims(None, stationary={"checks": [
        ...     {"claim": "Gibbs law", "holds": True, "detail": "gap 1e-9"}]})]
        [('C0', 'not measured'), ('TM0', 'not measured'), ('S1', 'holds')]
    """
    out: list[Claim] = []
    if analysis is not None:
        out.extend(sweep_claims(analysis))
    else:
        out.append(
            Claim(
                "C0",
                "theory §6",
                "Claims measured on a real-model sweep",
                NOT_MEASURED,
                "needs a sweep in the store",
                "no training runs found",
            )
        )
    out.extend(
        checks_claims(
            (two_minima or {}).get("checks"),
            prefix="TM",
            source="abstract 0.1-9; theory §4, §6.2–6.4, §6.14",
            figure="fig-two-minima",
            missing="Synthetic two-minima study (sgdtemp two-minima)",
        )
    )
    out.extend(
        checks_claims(
            (stationary or {}).get("checks"),
            prefix="S",
            source="abstract 0.1-5; theory §2.5, §6.3, §6.10, §6.14",
            figure="fig-stationary",
            missing="Stationary-law checks",
        )
    )
    return out
