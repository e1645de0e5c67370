"""One self-contained HTML page: figures as base64 PNG data URIs, inline CSS, no scripts.

The page needs nothing outside itself (no fonts, stylesheets, scripts or images from anywhere),
so it opens offline and can be mailed as one file.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sgdtemp.analysis import (
    ALPHA,
    COLLAPSE_FACTOR,
    DOES_NOT_HOLD,
    HOLDS,
    NOT_MEASURED,
    Analysis,
    Claim,
)
from sgdtemp.report._markup import esc as _e
from sgdtemp.report._markup import num as _num
from sgdtemp.report._markup import table as _table
from sgdtemp.report._markup import verdict_badge as _verdict
from sgdtemp.report._stationary import mechanisms_html, regime_html

__all__ = ["Figure", "render_html", "figure_to_data_uri", "png_to_data_uri"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1200px; padding: 0 1.2em 3em; color: #1d1d1f; line-height: 1.4; }
h1 { margin-top: 0.8em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em;
       margin-top: 2em; } h3 { margin-top: 1.4em; }
nav a { margin-right: 1em; } .meta { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.86em; width: 100%; }
th, td { border: 1px solid #ddd; padding: 4px 6px; vertical-align: top; text-align: left; }
th { background: #f3f3f5; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.verdict { display: inline-block; padding: 1px 7px; border-radius: 9px; font-weight: 600;
           white-space: nowrap; font-size: 0.92em; }
.v-holds { background: #d9f2df; color: #14532d; }
.v-no { background: #fde2e1; color: #7f1d1d; }
.v-na { background: #ececec; color: #444; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.88em; color: #444; margin-top: 0.3em; }
.small { font-size: 0.82em; color: #555; } details { margin: 0.6em 0; }
code { background: #f4f4f4; padding: 0 3px; border-radius: 3px; }
"""


@dataclass(frozen=True)
class Figure:
    """A figure ready to embed.

    Attributes:
        anchor: its id in the page (claims link to it).
        title: heading.
        data_uri: ``data:image/png;base64,...``.
        caption: what it shows.
    """

    anchor: str
    title: str
    data_uri: str
    caption: str = ""


def png_to_data_uri(data: bytes) -> str:
    """``data:image/png;base64,...`` of PNG bytes.

    Example:
        >>> png_to_data_uri(b"abc")
        'data:image/png;base64,YWJj'
    """
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_to_data_uri(fig: Any, *, dpi: int = 96) -> str:
    """Render a matplotlib figure to a PNG data URI and close it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return png_to_data_uri(buffer.getvalue())


def _figure(fig: Figure) -> str:
    return (
        f'<figure id="{_e(fig.anchor)}"><h3>{_e(fig.title)}</h3>'
        f'<img src="{fig.data_uri}" alt="{_e(fig.title)}">'
        + (f"<figcaption>{_e(fig.caption)}</figcaption>" if fig.caption else "")
        + "</figure>"
    )


def _claims_section(claims: Sequence[Claim], anchors: set[str]) -> str:
    counts = {v: sum(c.verdict == v for c in claims) for v in (HOLDS, DOES_NOT_HOLD, NOT_MEASURED)}
    rows = []
    for c in claims:
        fig = (
            f'<a href="#{_e(c.figure)}">{_e(c.figure)}</a>'
            if c.figure and c.figure in anchors
            else "–"
        )
        rows.append(
            [
                _e(c.id),
                f"{_e(c.claim)}<div class='small'>{_e(c.source)}</div>",
                _verdict(c.verdict),
                f"<div class='small'>{_e(c.rule)}</div>",
                f"<div class='small'>{_e(c.measured)}</div>",
                _e(c.compared_at or "–"),
                fig,
            ]
        )
    summary = ", ".join(f"{n} {_e(v)}" for v, n in counts.items())
    return (
        '<section id="claims"><h2>Claims of the paper</h2>'
        f"<p>{summary}. Each verdict follows from the measurements by the rule beside it; "
        "“does not hold at this scale” means the data shown here do not support the claim, "
        "not that the claim is false at the paper's scale. “Compared at” says where the "
        "numbers were taken: the runs' stationary expectations, matched train loss, the final "
        "epoch, or whole loss-vs-epoch curves.</p>"
        + _table(["id", "claim", "verdict", "rule", "measured", "compared at", "figure"], rows)
        + "</section>"
    )


def _counts_table(analysis: Analysis) -> str:
    rows = [[_e(k), f"<span class='num'>{v}</span>"] for k, v in sorted(analysis.counts.items())]
    return _table(["status", "runs"], rows)


def _cells_table(analysis: Analysis) -> str:
    by_cell: dict[tuple[float, int], list[Any]] = {}
    for r in analysis.runs:
        by_cell.setdefault((float(f"{r.lr:.6g}"), r.batch_size), []).append(r)
    roles: dict[tuple[float, int], tuple[str, str | None]] = {}
    for ln in analysis.invariance.lines:
        for c in ln.cells:
            roles[(c.lr, c.batch_size)] = (c.role, c.reason)
    rows = []
    for (lr, b), members in sorted(by_cell.items(), key=lambda kv: (kv[1][0].temperature, kv[0])):
        lams = [r.lr_lambda_max for r in members if r.lr_lambda_max is not None]
        finals = {}
        for name in ("train", "test"):
            vals = [r.loss[name][-1] for r in members if name in r.loss and len(r.loss[name])]
            vals = [v for v in vals if math.isfinite(v)]
            finals[name] = sum(vals) / len(vals) if vals else math.nan
        role, reason = roles.get((lr, b), ("scored", None))
        stationary = "–"
        if any(r.trained_to_stationarity for r in members):
            stationary = f"{sum(r.stationary_reached for r in members)} of {len(members)}"
        expected = [r.expectations.get("test", math.nan) for r in members]
        expected = [v for v in expected if math.isfinite(v)]
        rows.append(
            [
                _num(members[0].temperature, ".4g"),
                _num(lr, ".4g"),
                str(b),
                _e(", ".join(str(r.seed) for r in sorted(members, key=lambda r: r.seed))),
                _e(", ".join(sorted({r.status for r in members}))),
                _num(finals["train"], ".4f"),
                _num(finals["test"], ".4f"),
                stationary,
                _num(sum(expected) / len(expected) if expected else None, ".4f"),
                _num(sorted(lams)[len(lams) // 2] if lams else None, ".2f"),
                _e(role + (f": {reason}" if reason else "")),
            ]
        )
    return (
        "<details><summary>Every cell of the grid</summary>"
        + _table(
            [
                "T",
                "lr",
                "B",
                "seeds",
                "status",
                "final train loss",
                "final test loss",
                "stationary runs",
                "E_p[test loss] (stationary runs)",
                "lr·λ_max",
                "role in the invariance scores",
            ],
            rows,
        )
        + "</details>"
    )


def _invariance_table(analysis: Analysis) -> str:
    rows = []
    for ln in analysis.invariance.lines:
        verdict = "not scored" if ln.differs is None else ("differs" if ln.differs else "collapses")
        rows.append(
            [
                _e(ln.kind),
                _e(ln.label),
                _e(ln.metric),
                _e(
                    ", ".join(
                        f"T={c.temperature:.3g}" if ln.kind == "fixed-B" else f"B={c.batch_size}"
                        for c in ln.scored_cells
                    )
                ),
                str(ln.n_seeds),
                f"{_num(ln.kappa, '.2f')} [{_num(ln.kappa_ci[0], '.2f')}, "
                f"{_num(ln.kappa_ci[1], '.2f')}]",
                _num(ln.p_value, ".2g"),
                _num(ln.kappa_final, ".2f"),
                _num(ln.spread_cells, ".3g"),
                _num(ln.spread_seed, ".3g"),
                _num(ln.kappa_stable, ".2f"),
                f"<b>{_e(verdict)}</b><div class='small'>{_e(ln.why)}</div>",
            ]
        )
    return (
        '<div id="tab-invariance">'
        "<p class='small'>κ = √(MS between cells / MS between seeds within cells) over the "
        "loss-vs-epoch curves (epochs ≥ 1): ≈ 1 when cells differ only by seed noise (less when "
        "runs of one seed share initialization). A line "
        f"differs when κ &gt; {COLLAPSE_FACTOR:g} and p &lt; {ALPHA:g} (claim C1 divides "
        f"{ALPHA:g} by the number of iso-T tests). Scores use the cells in "
        "the SDE regime (measured lr·λ_max &lt; 1); the column “κ with large-lr cells” adds those "
        "with 1 ≤ lr·λ_max &lt; 2. Iso-T lines should "
        "collapse; fixed-lr (control) and fixed-B (across temperatures) lines should differ. "
        "Spreads are standard deviations of the final loss: across the cells' seed means, and "
        "across seeds within cells.</p>"
        + _table(
            [
                "line",
                "fixed",
                "metric",
                "scored cells",
                "seeds",
                "κ [95% CI]",
                "p",
                "κ final",
                "spread across cells",
                "seed spread",
                "κ with large-lr cells",
                "verdict",
            ],
            rows,
        )
        + "</div>"
    )


def _compared_label(t: Any) -> str:
    if t.mode == "plateau":
        return "final epoch (every run on a train-loss plateau)"
    if t.mode == "matched train loss":
        return f"matched train loss {t.target_train_loss:.4g}"
    return f"stationary: E_p[L̃] of {t.n_runs} runs ({t.n_not_stationary} not stationary, left out)"


def _matched_slope(t: Any) -> str:
    m = t.matched_slope
    if m is None:
        return "–"
    return (
        f"{_num(m.slope, '.4g')} [{_num(m.ci[0], '.4g')}, {_num(m.ci[1], '.4g')}] "
        f"at train loss {_num(t.matched_target, '.4g')}"
    )


def _trend_table(analysis: Analysis) -> str:
    rows = []
    for t in analysis.test_loss:
        for p in t.points:
            rows.append(
                [
                    _e(t.eval_set),
                    _e(t.kind),
                    _num(p.temperature, ".4g"),
                    f"{_num(p.mean, '.4f')} [{_num(p.ci[0], '.4f')}, {_num(p.ci[1], '.4f')}]",
                    _num(p.epoch, ".2f"),
                    str(p.n_runs),
                    str(p.n_seeds),
                ]
            )
    slopes = [
        [
            _e(t.eval_set),
            _e(_compared_label(t)),
            f"{_num(t.slope.slope, '.4g')} [{_num(t.slope.ci[0], '.4g')}, "
            f"{_num(t.slope.ci[1], '.4g')}]",
            f"{_num(t.final_slope.slope, '.4g')} [{_num(t.final_slope.ci[0], '.4g')}, "
            f"{_num(t.final_slope.ci[1], '.4g')}]",
            _matched_slope(t),
            "–"
            if t.excess_slope is None
            else f"{_num(t.excess_slope.slope, '.4g')} "
            f"[{_num(t.excess_slope.ci[0], '.4g')}, {_num(t.excess_slope.ci[1], '.4g')}]",
            f"{t.n_plateau}/{t.n_runs}",
        ]
        for t in analysis.test_loss
    ]
    dropped = (
        "<p class='small'>Left out of the trends: " + _e("; ".join(analysis.dropped)) + "</p>"
        if analysis.dropped
        else ""
    )
    return (
        _table(
            [
                "eval set",
                "compared at",
                "slope per doubling of T [95% CI]",
                "final-epoch slope (reference only)",
                "matched-train-loss slope (reference only)",
                "domain-only slope (corrupt − test)",
                "runs on a plateau",
            ],
            slopes,
        )
        + dropped
        + "<details><summary>Per temperature</summary>"
        + _table(
            [
                "eval set",
                "kind",
                "T",
                "loss [95% CI over seeds]",
                "epoch compared (stationary: of detection)",
                "runs",
                "seeds",
            ],
            rows,
        )
        + "</details>"
    )


def _checks_table(checks: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for c in checks:
        holds = c.get("holds")
        v = NOT_MEASURED if holds is None else (HOLDS if holds else DOES_NOT_HOLD)
        rows.append(
            [
                _e(c.get("claim", "")),
                _verdict(v),
                f"<span class='small'>{_e(c.get('detail', ''))}</span>",
            ]
        )
    return _table(["check", "verdict", "measured"], rows)


def _environment_section(
    analysis: Analysis | None, report_env: Mapping[str, Any], meta: Mapping[str, Any]
) -> str:
    rows = []
    envs = list(analysis.environments) if analysis is not None else []
    for i, env in enumerate(envs):
        pk = env.get("packages") or {}
        rows.append(
            [
                f"runs ({env.get('runs', '?')})",
                _e(env.get("python")),
                _e(env.get("platform")),
                _e(", ".join(f"{k} {v}" for k, v in sorted(pk.items()))),
                _e(env.get("device")),
                _e(env.get("host")),
                _e(env.get("cpu_count")),
                _e(env.get("git_commit")),
            ]
        )
        if i >= 9:
            break
    pk = report_env.get("packages") or {}
    rows.append(
        [
            "this report",
            _e(report_env.get("python")),
            _e(report_env.get("platform")),
            _e(", ".join(f"{k} {v}" for k, v in sorted(pk.items()))),
            "–",
            _e(report_env.get("host")),
            _e(report_env.get("cpu_count")),
            _e(report_env.get("git_commit")),
        ]
    )
    extra = "".join(
        f"<li><b>{_e(k)}</b>: {_e(v)}</li>" for k, v in meta.items() if v not in (None, "")
    )
    return (
        '<section id="environment"><h2>Environment</h2>'
        + _table(
            ["what", "python", "platform", "packages", "device", "host", "CPUs", "git commit"], rows
        )
        + (f"<ul class='small'>{extra}</ul>" if extra else "")
        + "</section>"
    )


def render_html(
    *,
    claims: Sequence[Claim],
    analysis: Analysis | None,
    sweep_figures: Sequence[Figure],
    two_minima: Mapping[str, Any] | None,
    two_minima_figures: Sequence[Figure],
    stationary: Mapping[str, Any] | None,
    stationary_figures: Sequence[Figure],
    report_env: Mapping[str, Any],
    meta: Mapping[str, Any],
    title: str = "sgdtemp: temperature of SGD, the paper end to end",
) -> str:
    """The report page.

    Args:
        claims: the claim table.
        analysis: the sweep analysis (None: no sweep).
        sweep_figures: figures of the sweep, in order.
        two_minima: the two-minima ``summary.json`` (None: not run).
        two_minima_figures: its figures.
        stationary: the stationary-law checks summary (None: not run).
        stationary_figures: its figures.
        report_env: the environment that made the report.
        meta: extra facts listed under the environment (store path, sweep, generated at, ...).
        title: the page title.

    Returns:
        The HTML text.
    """
    anchors = {f.anchor for f in (*sweep_figures, *two_minima_figures, *stationary_figures)}
    anchors.add("tab-invariance")
    if two_minima_figures:
        anchors.add("fig-two-minima")
    if stationary_figures:
        anchors.add("fig-stationary")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        "<p class='meta'>"
        + " · ".join(
            _e(f"{k}: {v}") for k, v in meta.items() if k in ("sweep", "store", "generated")
        )
        + "</p>",
        "<nav><a href='#claims'>claims</a><a href='#sweep'>sweep</a>"
        "<a href='#two-minima'>two minima</a><a href='#stationary'>stationary law</a>"
        "<a href='#environment'>environment</a></nav>",
        _claims_section(claims, anchors),
        "<section id='sweep'><h2>Real-model sweep</h2>",
    ]
    if analysis is None or not analysis.runs:
        parts.append("<p>No training runs in the store.</p>")
    else:
        others = (
            f" Other sweeps in the store (use <code>--sweep</code>): "
            f"{_e(', '.join(analysis.other_sweeps))}."
            if analysis.other_sweeps
            else ""
        )
        parts.append(
            f"<p>Sweep <b>{_e(analysis.sweep)}</b>: {len(analysis.runs)} runs.{others}</p>"
        )
        parts.append(regime_html(analysis))
        parts.append(_counts_table(analysis))
        parts.append(_cells_table(analysis))
        by_anchor = {f.anchor: f for f in sweep_figures}
        for f in sweep_figures:
            if f.anchor in ("fig-test-vs-t", "fig-mechanisms"):
                continue
            parts.append(_figure(f))
            if f.anchor == "fig-invariance":
                parts.append("<h3>Collapse scores by line</h3>" + _invariance_table(analysis))
        if "fig-invariance" not in by_anchor:
            parts.append("<h3>Collapse scores by line</h3>" + _invariance_table(analysis))
        if "fig-test-vs-t" in by_anchor:
            parts.append(_figure(by_anchor["fig-test-vs-t"]))
        parts.append("<h3>Loss vs T: slopes</h3>" + _trend_table(analysis))
        if "fig-mechanisms" in by_anchor:
            parts.append(_figure(by_anchor["fig-mechanisms"]))
        parts.append(mechanisms_html(analysis))
    parts.append("</section>")

    parts.append("<section id='two-minima'><h2>Synthetic two-minima study</h2>")
    if two_minima is None:
        parts.append("<p>Not run: <code>sgdtemp two-minima --out DIR</code> makes it.</p>")
    else:
        parts.append(_checks_table(two_minima.get("checks") or []))
        if two_minima_figures:
            parts.append(
                f"<div id='fig-two-minima'>{''.join(map(_figure, two_minima_figures))}</div>"
            )
    parts.append("</section>")

    parts.append("<section id='stationary'><h2>Stationary-law checks</h2>")
    if stationary is None:
        parts.append("<p>Not run.</p>")
    else:
        parts.append(_checks_table(stationary.get("checks") or []))
        if stationary_figures:
            parts.append(
                f"<div id='fig-stationary'>{''.join(map(_figure, stationary_figures))}</div>"
            )
    parts.append("</section>")
    parts.append(_environment_section(analysis, report_env, meta))
    parts.append("</body></html>")
    return "\n".join(parts)


def read_png(path: Path) -> str:
    """A PNG file as a data URI."""
    return png_to_data_uri(Path(path).read_bytes())
