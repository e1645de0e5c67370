"""The paper's claims with verdicts computed from the measurements, each with its rule.

Every verdict is one of :data:`VERDICTS` and follows from the numbers by the rule written in the
claim's ``rule`` field; nothing here is hard-coded to come out one way. Claims of theory.md §0.1
and §6 that the sweep measures are judged from an :class:`~sgdtemp.analysis.Analysis`; the
synthetic two-minima study and the stationary-law checks bring their own ``checks`` lists
(``{"claim", "holds", "detail"}``), whose rules are stated in the claim text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sgdtemp.analysis._claim import (
    CLAIM_COMPARED_AT,
    DOES_NOT_HOLD,
    EPOCH_CURVES,
    HOLDS,
    NO_CI,
    NOT_MEASURED,
    VERDICTS,
    Claim,
    fmt,
    fmt_ci,
    slopes_verdict,
    span,
)
from sgdtemp.analysis._claims_loss import trend_claims
from sgdtemp.analysis._claims_mechanisms import (
    DECOMPOSITION_RTOL,
    QUADRATIC_RATIO_RANGE,
    mechanism_claims,
)
from sgdtemp.analysis.invariance import ALPHA, COLLAPSE_FACTOR, LineScore

if TYPE_CHECKING:
    from sgdtemp.analysis._analyze import Analysis

__all__ = [
    "Claim",
    "VERDICTS",
    "HOLDS",
    "DOES_NOT_HOLD",
    "NOT_MEASURED",
    "CLAIM_COMPARED_AT",
    "sweep_claims",
    "checks_claims",
    "all_claims",
    "QUADRATIC_RATIO_RANGE",
    "DECOMPOSITION_RTOL",
]

# Metrics whose curves the invariance verdicts use.
_INVARIANCE_METRICS = ("train", "test")
# The invariance claims score whole loss-vs-epoch curves.
_AT = EPOCH_CURVES


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
        c1 = Claim("C1", src1, claim1, NOT_MEASURED, rule1, f"not scored: {why}", "fig-curves", _AT)
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
        c1 = Claim("C1", src1, claim1, verdict, rule1, measured, "fig-curves", _AT)

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
        c2 = Claim(
            "C2", src2, claim2, NOT_MEASURED, rule2, f"not scored: {why}", "fig-control", _AT
        )
    else:
        ok = all(any(_departs(ln, ALPHA) for ln in group) for group in by_line.values())
        measured = f"(* = differs at p < {ALPHA:g}) " + _lines_text(ctrl)
        c2 = Claim(
            "C2", src2, claim2, HOLDS if ok else DOES_NOT_HOLD, rule2, measured, "fig-control", _AT
        )
    return [c1, c2]


def _curvature_claim(analysis: Analysis) -> Claim:
    rule = (
        "holds when the slopes of log trace and log λ_max on log2 T (one intercept per seed, "
        "95% CI) both lie entirely below 0; cells in the SDE regime (lr·λ_max < 1), measured "
        "at the final weights (one iterate, not a stationary expectation)"
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
            compared_at="final epoch",
        )
    missing = [m for m in ("trace", "lambda_max") if m not in trends]
    parts = [
        f"{m}: {span(c.points)}; log-slope per doubling of T {fmt(c.log_slope.slope)} "
        f"{fmt_ci(*c.log_slope.ci)}"
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
            compared_at="final epoch",
        )
    verdict = slopes_verdict([c.log_slope for c in trends.values()])
    if verdict == NOT_MEASURED:
        parts.append(NO_CI.strip(" ()"))
    return Claim(
        "C7",
        source,
        claim,
        verdict,
        rule,
        " | ".join(parts),
        figure="fig-curvature",
        compared_at="final epoch",
    )


def sweep_claims(analysis: Analysis) -> list[Claim]:
    """The claims the η × B sweep measures (C1–C11), with verdicts."""
    return [
        *_invariance_claims(analysis),
        *trend_claims(analysis),
        _curvature_claim(analysis),
        *mechanism_claims(analysis),
    ]


def checks_claims(
    checks: Sequence[Mapping[str, Any]] | None,
    *,
    prefix: str,
    source: str,
    figure: str | None,
    missing: str,
    compared_at: str | None = "stationary",
) -> list[Claim]:
    """Claims from a study's ``checks`` list (``{"claim", "holds", "detail"}``).

    ``holds`` True gives "holds", False "does not hold at this scale", None "not measured".
    Without checks, one "not measured" row says why (its ``compared_at`` None). The synthetic
    studies compare equilibrated samples with stationary laws, hence ``compared_at``
    "stationary" by default.

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
                compared_at,
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
