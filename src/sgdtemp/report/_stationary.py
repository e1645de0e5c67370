"""The report's stationary parts: the regime a sweep was trained in, and the mechanisms table."""

from __future__ import annotations

from sgdtemp.analysis import DECOMPOSITION_RTOL, MECHANISM_TERMS, Analysis, sweep_regime
from sgdtemp.report._markup import esc, num, table

__all__ = ["regime_html", "mechanisms_html"]


def regime_html(analysis: Analysis) -> str:
    """The regime paragraph: stationary runs of how many, λ, the rule; the runs that were not."""
    regime = analysis.regime or sweep_regime(analysis.runs)
    out = f"<p id='regime'><b>Regime.</b> {esc(regime.text)}</p>"
    if regime.not_stationary:
        items = "".join(f"<li>{esc(line)}</li>" for line in regime.not_stationary)
        out += (
            f"<details><summary>{len(regime.not_stationary)} runs not stationary within budget "
            f"(left out of every stationary verdict)</summary><ul class='small'>{items}</ul>"
            "</details>"
        )
    return out


def mechanisms_html(analysis: Analysis) -> str:
    """Per eval set and T, the seed means of the decomposition; C10's errors; runs left out."""
    if not analysis.decomposition:
        return ""
    rows = []
    for d in analysis.decomposition:
        for row in d.rows():
            rows.append(
                [
                    esc(d.eval_set),
                    num(row["temperature"], ".4g"),
                    f"{row['runs']} ({row['seeds']} seeds)",
                    *(num(row[t], ".3g") for t in MECHANISM_TERMS),
                    num(row["sum"], ".4g"),
                    f"{num(row['measured'], '.4g')} ± {num(row['measured_error'], '.2g')}",
                    num(row["sampling_term"], ".2g"),
                    num(row["remainder"], ".2g"),
                    num(row["eval_loss_mean"], ".4f"),
                ]
            )
    summary = []
    for d in analysis.decomposition:
        left = ""
        if d.left_out:
            items = "".join(f"<li>{esc(line)}</li>" for line in d.left_out)
            left = (
                f"<details><summary>{len(d.left_out)} runs left out on {esc(d.eval_set)}"
                f"</summary><ul class='small'>{items}</ul></details>"
            )
        if d.n_runs:
            used = (
                f"{d.n_runs} runs used; median |sum − measured| / |measured| "
                f"{num(d.median_relative_error * 100, '.1f')} % (C10 asks ≤ "
                f"{DECOMPOSITION_RTOL:.0%})"
            )
        else:
            used = "no usable run"
        skipped = f"; {d.n_skipped} stationary runs not measured" if d.n_skipped else ""
        summary.append(f"<li><b>{esc(d.eval_set)}</b>: {used}{skipped}{left}</li>")
    return (
        "<h3 id='tab-mechanisms'>The three curvature mechanisms: seed means</h3>"
        "<p class='small'>Per eval set, from each stationary run's window mean θ̄ and sampled "
        "iterates θ_j (theory §1.7): θ* the minimum of F = L + λ/2‖θ‖² reached from θ̄, θ̃* the "
        "minimum of F̃ = L̃ + λ/2‖θ‖² reached from θ*, s = θ* − θ̃*, b = θ̄ − θ*, "
        "H̃ = ∇²F̃(θ̃*) (λI included). Measured: the mean of F̃(θ_j) − F(θ*) over the iterates "
        "(± half-width of its 95% interval: over seeds, or from the iterates' standard error "
        "with one seed). The sampling term and the cubic remainder are outside the sum. "
        "E_p[L̃]: the expected data loss over the same iterates.</p>"
        + (
            ""
            if not rows
            else table(
                [
                    "eval set",
                    "T",
                    "runs",
                    "vertical",
                    "shift-curvature",
                    "cross",
                    "bias-curvature",
                    "covariance-curvature",
                    "sum",
                    "measured",
                    "sampling term",
                    "remainder",
                    "E_p[L̃]",
                ],
                rows,
            )
        )
        + f"<ul class='small'>{''.join(summary)}</ul>"
    )
