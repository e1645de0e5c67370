"""Claims C3–C6: the test loss vs T per evaluation set, judged at stationarity when trained so."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from sgdtemp.analysis._claim import (
    NO_CI,
    NOT_MEASURED,
    Claim,
    fmt,
    fmt_ci,
    slopes_verdict,
    span,
)
from sgdtemp.analysis.regime import Regime, sweep_regime
from sgdtemp.analysis.trend import PLATEAU_RTOL, TestLossTrend

if TYPE_CHECKING:
    from sgdtemp.analysis._analyze import Analysis

__all__ = ["trend_claims", "runs_phrase"]

_FIGURE = "fig-test-vs-t"


def _trend_text(t: TestLossTrend) -> str:
    mode = "stationarity" if t.mode == "stationary" else t.mode
    if t.mode == "matched train loss":
        mode += f" {t.target_train_loss:.3g}"
    return (
        f"{t.eval_set} at {mode}: {span(t.points)}; slope per doubling of T {fmt(t.slope.slope)} "
        f"{fmt_ci(*t.slope.ci)}; lowest at T={t.best_temperature:.3g}"
    )


def runs_phrase(
    regime: Regime,
    used: int,
    not_stationary: int | None = None,
    *,
    unusable: int = 0,
    unusable_label: str = "",
) -> str:
    """``"at stationarity, n of N runs (left out: ...)"`` or the fixed-epoch equivalent.

    Args:
        regime: the sweep's regime (N = its ``runs_total``).
        used: runs the claim uses.
        not_stationary: runs left out as not stationary (default: every finished run that
            did not become stationary).
        unusable: runs left out for another stated reason (``unusable_label``).
        unusable_label: that reason.

    Example:
        >>> print(runs_phrase(Regime(True, 12, 12, 10), 8, 2))
        at stationarity, 8 of 12 runs (left out: 2 not stationary within budget, 2 outside the SDE regime or not measured)
    """  # noqa: E501
    n = regime.runs_total
    if not regime.until_stationary:
        return f"fixed number of epochs (not trained until stationary), {used} of {n} runs"
    if not_stationary is None:
        not_stationary = regime.runs_finished - regime.runs_stationary
    rest = n - used - not_stationary - unusable
    parts = [f"{not_stationary} not stationary within budget"] if not_stationary else []
    if unusable:
        parts.append(f"{unusable} {unusable_label}")
    if rest > 0:
        parts.append(f"{rest} outside the SDE regime or not measured")
    left = f" (left out: {', '.join(parts)})" if parts else ""
    return f"at stationarity, {used} of {n} runs{left}"


def _rule(regime: Regime, what: str) -> str:
    slope = (
        f"holds when the {what} has a slope on log2 T (one intercept per seed, 95% CI) entirely "
        "below 0; "
    )
    if regime.until_stationary:
        return slope + (
            "compared at stationarity: each run's stationary expectation E_p[L̃], the mean loss "
            "over the iterates sampled from its stationary window; only runs that became "
            "stationary within budget count (the others are counted and left out), in cells of "
            "the SDE regime (lr·λ_max < 1); the final-epoch and matched-train-loss values of the "
            "same runs are reference only"
        )
    return slope + (
        "the sweep was trained for a fixed number of epochs, so losses are compared on a "
        f"train-loss plateau (moved < {PLATEAU_RTOL:.0%} over the last quarter of the epochs) "
        "when every run has one, else at the lowest train loss every run reaches; never at a "
        "fixed epoch; cells in the SDE regime (lr·λ_max < 1) only"
    )


def _reference(t: TestLossTrend) -> str:
    text = (
        f" | (reference only, same runs: final epoch slope {fmt(t.final_slope.slope)} "
        f"{fmt_ci(*t.final_slope.ci)}"
    )
    if t.matched_slope is not None:
        text += (
            f"; at matched train loss {t.matched_target:.3g} slope "
            f"{fmt(t.matched_slope.slope)} {fmt_ci(*t.matched_slope.ci)}"
        )
    return text + f"; {t.n_plateau} of {t.n_runs} runs on a train-loss plateau)"


def trend_claims(analysis: Analysis) -> list[Claim]:
    """C3 (test set), C4 (held-out: sampling shift), C5 (corrupted: domain shift), C6."""
    regime = analysis.regime or sweep_regime(analysis.runs)
    trends = {t.eval_set: t for t in analysis.test_loss}
    dropped = f" Left out cells: {'; '.join(analysis.dropped)}." if analysis.dropped else ""
    default_at = "stationary" if regime.until_stationary else None
    none_stationary = regime.until_stationary and not trends

    def empty(cid: str, source: str, claim: str, rule: str, why: str) -> Claim:
        if none_stationary:
            why = runs_phrase(regime, 0) + ": no run of the SDE regime became stationary"
        return Claim(cid, source, claim, NOT_MEASURED, rule, why + dropped, _FIGURE, default_at)

    def one(cid: str, claim: str, source: str, names: Sequence[str], what: str) -> Claim:
        rule = _rule(regime, what)
        present = [trends[n] for n in names if n in trends]
        if not present:
            return empty(cid, source, claim, rule, "no such evaluation set")
        ref = present[0]
        verdict = slopes_verdict([t.slope for t in present])
        measured = runs_phrase(regime, ref.n_runs, ref.n_not_stationary)
        measured += " | " + " | ".join(_trend_text(t) for t in present)
        if verdict == NOT_MEASURED:
            measured += NO_CI
        measured += _reference(ref)
        return Claim(
            cid, source, claim, verdict, rule, measured + dropped, _FIGURE, ref.compared_at
        )

    out = [
        one(
            "C3",
            "Test loss decreases as T increases (test set)",
            "abstract 0.1-7, 0.1-8b; theory §2.7, §6.7",
            ["test"],
            "test loss",
        ),
        one(
            "C4",
            "The improvement appears under sampling shift (held-out split of the training set)",
            "abstract 0.1-3, 0.1-8c; theory §6.8",
            ["heldout"],
            "held-out loss",
        ),
    ]
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
    out.append(_domain_claim(analysis, regime, trends, corrupt, dropped, empty))
    return out


def _domain_claim(
    analysis: Analysis,
    regime: Regime,
    trends: dict[str, TestLossTrend],
    corrupt: list[str],
    dropped: str,
    empty: Callable[[str, str, str, str, str], Claim],
) -> Claim:
    where = "stationary expectations" if regime.until_stationary else "compared losses"
    rule = (
        f"holds when, on every corrupted set, the slope of (corrupted − clean test loss, both "
        f"{where}) on log2 T has a 95% CI entirely below 0 (the domain shift itself shrinks "
        "with T); the dominant driver is the larger of the held-out improvement and that "
        "domain-only improvement per doubling of T"
    )
    claim = "Domain shift drives part of the improvement, beyond sampling shift"
    source = "abstract 0.1-8c; theory §6.8"
    excess = [(n, trends[n].excess_slope) for n in corrupt if trends[n].excess_slope is not None]
    held = trends.get("heldout")
    if not excess:
        return empty("C6", source, claim, rule, "no corrupted evaluation set")
    verdict = slopes_verdict([s for _, s in excess if s is not None])
    ref = trends[corrupt[0]]
    parts = [runs_phrase(regime, ref.n_runs, ref.n_not_stationary)]
    parts += [f"{n}: domain-only slope {fmt(s.slope)} {fmt_ci(*s.ci)}" for n, s in excess if s]
    if verdict == NOT_MEASURED:
        parts.append(NO_CI.strip(" ()"))
    if held is not None and verdict != NOT_MEASURED:
        samp = -held.slope.slope
        dom = max(-s.slope for _, s in excess if s is not None)
        if max(samp, dom) <= 0:
            which = "neither loss improves with T"
        else:
            which = ("sampling shift" if samp >= dom else "domain shift") + " dominates"
        parts.append(
            f"held-out (sampling) improvement per doubling {fmt(samp)}, largest domain-only "
            f"improvement {fmt(dom)}: {which}"
        )
    return Claim(
        "C6", source, claim, verdict, rule, " | ".join(parts) + dropped, _FIGURE, ref.compared_at
    )
