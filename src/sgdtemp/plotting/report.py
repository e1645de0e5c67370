"""Figures of a sweep report, drawn from an :class:`~sgdtemp.analysis.Analysis` only.

Each function returns a matplotlib ``Figure`` (or None when there is nothing to draw); the
report embeds them. Nothing here computes beyond what it displays (seed means and ranges).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from sgdtemp.analysis import MECHANISM_TERMS, SHIFT_TERMS, Analysis, RunView  # noqa: E402
from sgdtemp.analysis.invariance import COLLAPSE_FACTOR, cell_key  # noqa: E402

__all__ = [
    "plot_heatmap",
    "plot_curves_by_temperature",
    "plot_control_curves",
    "plot_invariance_scores",
    "plot_test_loss_vs_temperature",
    "plot_curvature_vs_temperature",
    "plot_shift_decomposition",
    "plot_mechanisms",
    "plot_stationary_checks",
    "SWEEP_FIGURES",
]

_TERM_COLORS = {"vertical": "C0", "shift_curvature": "C3", "remainder": "C7"}
_KIND_COLORS = {"iso-T": "C0", "fixed-lr": "C3", "fixed-B": "C2"}
_MECHANISM_COLORS = {
    "vertical": "C0",
    "shift_curvature": "C3",
    "cross": "C1",
    "bias_curvature": "C2",
    "covariance_curvature": "C4",
}


def _key(t: float) -> float:
    return float(f"{t:.6g}")


def _temps(runs: Sequence[RunView]) -> list[float]:
    return sorted({_key(r.temperature) for r in runs})


def _roles(analysis: Analysis) -> dict[tuple[float, int], tuple[str, str | None]]:
    """Role of every cell from the invariance lines (scored / unstable / excluded)."""
    out: dict[tuple[float, int], tuple[str, str | None]] = {}
    for ln in analysis.invariance.lines:
        for c in ln.cells:
            out[(c.lr, c.batch_size)] = (c.role, c.reason)
    return out


def _fraction(v: float) -> str:
    """``"1/2048"`` for reciprocals of integers (to 6 digits), else ``"0.003"``.

    Example:
        >>> _fraction(0.000488281), _fraction(0.003), _fraction(2.0)
        ('1/2048', '0.003', '2')
    """
    if v >= 1:
        return f"{v:g}"
    inv = 1.0 / v
    if abs(inv - round(inv)) <= 1e-5 * inv:
        return f"1/{round(inv)}"
    return f"{v:.3g}"


def _log2_ticks(ax: Any, axis: str, values: Sequence[float]) -> None:
    vals = sorted(set(values))
    labels = [_fraction(v) for v in vals]
    if axis == "x":
        ax.set_xticks(np.log2(vals), labels)
    else:
        ax.set_yticks(np.log2(vals), labels)


def plot_heatmap(analysis: Analysis, *, metric: str = "test") -> Figure | None:
    """The lr × B grid: final-epoch loss per cell (seed mean), iso-T lines, η·λ_max, status."""
    runs = [r for r in analysis.runs if metric in r.loss]
    if not runs:
        return None
    lrs = sorted({cell_key(r)[0] for r in runs})
    bs = sorted({r.batch_size for r in runs})
    grid = np.full((len(lrs), len(bs)), np.nan)
    roles = _roles(analysis)
    fig, ax = plt.subplots(figsize=(1.2 * len(bs) + 3.5, 0.75 * len(lrs) + 2.2))
    cells: dict[tuple[float, int], list[RunView]] = {}
    for r in runs:
        cells.setdefault(cell_key(r), []).append(r)
    for (lr, b), members in cells.items():
        finals = [float(r.loss[metric][-1]) for r in members if r.finished_ok]
        finals = [v for v in finals if math.isfinite(v)]
        if finals:
            grid[lrs.index(lr), bs.index(b)] = float(np.mean(finals))
    finite = grid[np.isfinite(grid)]
    vmax = float(np.quantile(finite, 0.9)) if finite.size else 1.0
    image = ax.imshow(
        grid,
        origin="lower",
        cmap="viridis_r",
        aspect="auto",
        vmin=float(finite.min()) if finite.size else 0.0,
        vmax=vmax,
        extent=(-0.5, len(bs) - 0.5, -0.5, len(lrs) - 0.5),
    )
    fig.colorbar(image, ax=ax, label=f"{metric} loss, final epoch (seed mean)")
    for (lr, b), members in cells.items():
        i, j = lrs.index(lr), bs.index(b)
        role, _ = roles.get((lr, b), ("scored", None))
        lams = [r.lr_lambda_max for r in members if r.lr_lambda_max is not None]
        text = "" if not math.isfinite(grid[i, j]) else f"{grid[i, j]:.3f}"
        if lams:
            text += f"\nηλ={np.median(lams):.2f}"
        if role == "excluded":
            text += "\n× " + members[0].status if not any(r.finished_ok for r in members) else "\n×"
        elif role == "unstable":
            text += "\n(unstable)"
        ax.text(
            j,
            i,
            text,
            ha="center",
            va="center",
            fontsize=7,
            color="white" if role == "scored" else "red",
        )
    # iso-T lines through the cells of each recorded temperature (momentum included, never
    # re-derived here); lr = T·B(1−β) is a diagonal of slope 1 in (log2 B, log2 lr) index space
    # when both grids are powers of two.
    cell_temperature = {cell: _key(members[0].temperature) for cell, members in cells.items()}
    for t in _temps(runs):
        pts = sorted(
            (bs.index(b), lrs.index(lr)) for (lr, b), ct in cell_temperature.items() if ct == t
        )
        if len(pts) >= 2:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, "-", color="white", lw=1, alpha=0.7)
            ax.annotate(
                f"T={t:.3g}",
                (xs[-1], ys[-1]),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=7,
                color="k",
            )
    ax.set_xticks(range(len(bs)), [str(b) for b in bs])
    ax.set_yticks(range(len(lrs)), [f"{v:.3g}" for v in lrs])
    ax.set_xlabel("batch size B")
    ax.set_ylabel("learning rate η")
    ax.set_title(f"{metric} loss on the η × B grid; lines: iso-T (η/B = T)")
    fig.tight_layout()
    return fig


def _band(
    ax: Any, runs: Sequence[RunView], metric: str, color: Any, label: str, dashed: bool
) -> None:
    curves = [r.loss[metric] for r in runs if metric in r.loss]
    if not curves:
        return
    n = min(len(c) for c in curves)
    arr = np.array([c[:n] for c in curves])
    e = runs[0].epochs[:n]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN epochs of diverged runs
        mean = np.nanmean(arr, axis=0)
        lo, hi = np.nanmin(arr, axis=0), np.nanmax(arr, axis=0)
    ax.plot(e, mean, "--" if dashed else "-", color=color, label=label, lw=1.3)
    if len(curves) > 1:
        ax.fill_between(e, lo, hi, color=color, alpha=0.15, lw=0)


def _ylim_after_start(ax: Any, runs: Sequence[RunView], metric: str) -> None:
    """Fit the y-axis to epochs >= 1 (epoch 0, the shared initialization, would flatten it)."""
    parts = [r.loss[metric][1:] for r in runs if metric in r.loss]
    vals = np.concatenate(parts) if parts else np.zeros(0)
    vals = vals[np.isfinite(vals)]
    if vals.size:
        lo, hi = float(vals.min()), float(np.quantile(vals, 0.98))
        pad = 0.05 * (hi - lo) if hi > lo else 0.05 * abs(hi) + 1e-3
        ax.set_ylim(lo - pad, hi + pad)


def _curve_grid(
    analysis: Analysis,
    groups: Sequence[tuple[str, list[RunView]]],
    metrics: Sequence[str],
    color_by: str,
    title: str,
) -> Figure | None:
    if not groups:
        return None
    roles = _roles(analysis)
    fig, axes = plt.subplots(
        len(metrics),
        len(groups),
        figsize=(3.1 * len(groups) + 0.6, 2.6 * len(metrics)),
        squeeze=False,
        sharex=True,
    )
    all_keys = sorted(
        {(r.batch_size if color_by == "B" else _key(r.temperature)) for _, rs in groups for r in rs}
    )
    cmap = plt.get_cmap("viridis")
    for col, (label, rs) in enumerate(groups):
        by_cell: dict[tuple[float, int], list[RunView]] = {}
        for r in rs:
            by_cell.setdefault(cell_key(r), []).append(r)
        for row, metric in enumerate(metrics):
            ax = axes[row][col]
            for cell in sorted(by_cell, key=lambda c: c[1]):
                members = by_cell[cell]
                key = cell[1] if color_by == "B" else _key(members[0].temperature)
                color = cmap(all_keys.index(key) / max(1, len(all_keys) - 1))
                role, _ = roles.get(cell, ("scored", None))
                name = f"B={cell[1]}" if color_by == "B" else f"T={key:.3g} (B={cell[1]})"
                if role != "scored":
                    name += f" [{role}]"
                _band(ax, members, metric, color, name, role != "scored")
            _ylim_after_start(ax, rs, metric)
            if row == 0:
                ax.set_title(label, fontsize=9)
            if col == 0:
                ax.set_ylabel(f"{metric} loss")
            if row == len(metrics) - 1:
                ax.set_xlabel("epoch")
            ax.legend(fontsize=6, loc="upper right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_curves_by_temperature(
    analysis: Analysis, *, metrics: Sequence[str] = ("train", "test")
) -> Figure | None:
    """Loss vs epoch, one column per T, one curve per batch size (seed mean and range)."""
    metrics = [m for m in metrics if any(m in r.loss for r in analysis.runs)]
    temps = _temps(analysis.runs)
    groups = [
        (f"T = {t:.3g}", [r for r in analysis.runs if _key(r.temperature) == t and len(r.epochs)])
        for t in temps
    ]
    groups = [(g, rs) for g, rs in groups if rs]
    return _curve_grid(
        analysis,
        groups,
        metrics,
        "B",
        "iso-T lines: curves of one T should coincide (dashed: unstable or excluded cells)",
    )


def plot_control_curves(
    analysis: Analysis, *, metrics: Sequence[str] = ("train", "test")
) -> Figure | None:
    """Loss vs epoch along fixed-lr lines (the control: T changes, curves should differ)."""
    metrics = [m for m in metrics if any(m in r.loss for r in analysis.runs)]
    lines = analysis.invariance.select("fixed-lr", metrics[0] if metrics else None)
    groups = []
    for ln in lines:
        keys = {(c.lr, c.batch_size) for c in ln.cells}
        rs = [r for r in analysis.runs if cell_key(r) in keys and len(r.epochs)]
        if rs:
            groups.append((f"lr = {ln.value:.4g}", rs))
    return _curve_grid(
        analysis,
        groups,
        metrics,
        "T",
        "control: fixed lr, B (hence T) varies: curves should differ",
    )


def plot_invariance_scores(analysis: Analysis) -> Figure | None:
    """Collapse score κ (with CI) of every scored line, by kind and metric."""
    lines = [ln for ln in analysis.invariance.lines if ln.differs is not None]
    if not lines:
        return None
    metrics = list(analysis.invariance.metrics)
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(4.8 * len(metrics), 0.32 * len(lines) + 2), squeeze=False
    )
    for ax, metric in zip(axes[0], metrics):
        sel = [ln for ln in lines if ln.metric == metric]
        for i, ln in enumerate(sel):
            color = _KIND_COLORS[ln.kind]
            lo, hi = ln.kappa_ci
            ax.plot([lo, hi], [i, i], color=color, lw=2, alpha=0.5)
            ax.plot(ln.kappa, i, "o", color=color, mfc="white" if ln.differs else color)
        ax.axvline(COLLAPSE_FACTOR, color="k", ls=":", lw=1)
        ax.axvline(1.0, color="0.6", lw=0.8)
        ax.set_yticks(range(len(sel)), [f"{ln.kind} {ln.label}" for ln in sel], fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("collapse score κ (1 = seed noise; dotted: threshold)")
        ax.set_title(f"{metric} loss curves", fontsize=9)
    fig.tight_layout()
    return fig


def _errorbar(
    ax: Any, points: Sequence[Any], label: str, color: Any, *, fmt: str = "o-", alpha: float = 1.0
) -> None:
    if not points:
        return
    t = np.array([p.temperature for p in points])
    m = np.array([p.mean for p in points])
    lo = np.array([p.ci[0] for p in points])
    hi = np.array([p.ci[1] for p in points])
    err = np.where(np.isfinite(lo), np.vstack([m - lo, hi - m]), 0.0)
    ax.errorbar(
        np.log2(t), m, yerr=err, fmt=fmt, color=color, label=label, capsize=3, alpha=alpha, ms=4
    )


def plot_test_loss_vs_temperature(analysis: Analysis) -> Figure | None:
    """Loss vs T per evaluation set at the comparison point (95% CI over seeds)."""
    trends = list(analysis.test_loss)
    if not trends:
        return None
    groups = [
        ("sampling shift (held-out)", [t for t in trends if t.kind == "sampling"]),
        ("test set", [t for t in trends if t.kind == "test"]),
        ("domain shift (corrupted test set)", [t for t in trends if t.kind == "domain"]),
    ]
    groups = [(g, ts) for g, ts in groups if ts]
    fig, axes = plt.subplots(1, len(groups), figsize=(4.4 * len(groups), 3.6), squeeze=False)
    temps = sorted({p.temperature for t in trends for p in t.points})
    for ax, (title, ts) in zip(axes[0], groups):
        for i, t in enumerate(ts):
            color = f"C{i}"
            _errorbar(ax, t.points, t.eval_set, color)
            _errorbar(
                ax,
                t.final_points,
                f"{t.eval_set} (final epoch, reference)",
                color,
                fmt="x:",
                alpha=0.45,
            )
        if temps:
            _log2_ticks(ax, "x", temps)
        ax.set_xlabel("temperature T = η/B")
        ax.set_ylabel("loss")
        mode = ts[0].mode
        if mode == "matched train loss":
            mode += f" = {ts[0].target_train_loss:.3g}"
        elif mode == "stationary":
            mode = f"stationarity: E_p[L̃], {ts[0].n_runs} runs"
        ax.set_title(f"{title}\nat {mode}", fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def plot_curvature_vs_temperature(analysis: Analysis) -> Figure | None:
    """Hessian trace and λ_max of the trained models vs T (runs and means with CI)."""
    trends = list(analysis.curvature)
    if not trends:
        return None
    names = {"trace": "Hessian trace (Hutchinson)", "lambda_max": "λ_max (Lanczos)"}
    fig, axes = plt.subplots(1, len(trends), figsize=(4.4 * len(trends), 3.4), squeeze=False)
    for ax, c in zip(axes[0], trends):
        for p in c.points:
            ax.plot(
                np.full(len(p.values), math.log2(p.temperature)), p.values, ".", color="0.6", ms=4
            )
        _errorbar(ax, c.points, "mean over seeds (95% CI)", "C0")
        _log2_ticks(ax, "x", [p.temperature for p in c.points])
        ax.set_yscale("log")
        ax.set_xlabel("temperature T = η/B")
        ax.set_title(
            f"{names.get(c.measure, c.measure)}\nlog-slope per doubling {c.log_slope.slope:.3g}",
            fontsize=9,
        )
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_shift_decomposition(analysis: Analysis) -> Figure | None:
    """Stacked test-minus-train gap per T: vertical shift, shift-curvature, remainder."""
    shifts = list(analysis.shift)
    if not shifts:
        return None
    fig, axes = plt.subplots(
        1, len(shifts), figsize=(4.0 * len(shifts), 3.6), squeeze=False, sharey=True
    )
    for ax, s in zip(axes[0], shifts):
        temps = sorted({p.temperature for pts in s.terms.values() for p in pts})
        x = np.arange(len(temps))
        pos = np.zeros(len(temps))
        neg = np.zeros(len(temps))
        for term in SHIFT_TERMS:
            if term not in s.terms:
                continue
            vals = np.full(len(temps), np.nan)
            for p in s.terms[term]:
                vals[temps.index(p.temperature)] = p.mean
            vals = np.nan_to_num(vals)
            base = np.where(vals >= 0, pos, neg)
            ax.bar(x, vals, bottom=base, color=_TERM_COLORS[term], label=term, width=0.6)
            pos += np.where(vals >= 0, vals, 0)
            neg += np.where(vals < 0, vals, 0)
        if "gap" in s.terms:
            gx = [temps.index(p.temperature) for p in s.terms["gap"]]
            ax.plot(gx, [p.mean for p in s.terms["gap"]], "kD", ms=5, label="measured gap")
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xticks(x, [f"{t:.3g}" for t in temps], fontsize=7)
        ax.set_xlabel("temperature T")
        ax.set_title(f"{s.eval_set} ({s.kind})", fontsize=9)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("test − train loss at θ*")
    fig.tight_layout()
    return fig


def plot_mechanisms(analysis: Analysis) -> Figure | None:
    """Stacked decomposition terms vs T per eval set, beside the measured expectation (95 %)."""
    trends = [d for d in analysis.decomposition if d.n_runs > 0]
    if not trends:
        return None
    ncols = min(4, len(trends))
    nrows = math.ceil(len(trends) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.3 * nrows + 0.7), squeeze=False)
    for ax in axes.flat[len(trends) :]:
        ax.set_visible(False)
    for ax, d in zip(axes.flat, trends):
        temps = list(d.temperatures)
        x = np.arange(len(temps), dtype=float)
        pos, neg = np.zeros(len(temps)), np.zeros(len(temps))
        for term in MECHANISM_TERMS:
            vals = np.array([getattr(d.at(term, t), "mean", np.nan) for t in temps])
            vals = np.nan_to_num(vals)
            base = np.where(vals >= 0, pos, neg)
            label = term.replace("_", "-")
            ax.bar(x - 0.18, vals, 0.34, bottom=base, color=_MECHANISM_COLORS[term], label=label)
            pos += np.where(vals >= 0, vals, 0)
            neg += np.where(vals < 0, vals, 0)
        total = [getattr(d.at("sum", t), "mean", np.nan) for t in temps]
        ax.plot(x - 0.18, total, "o", mfc="white", mec="k", ms=5, label="sum of the five terms")
        measured = [getattr(d.at("measured", t), "mean", np.nan) for t in temps]
        err = np.nan_to_num(np.asarray(d.measured_error, dtype=float))
        ax.errorbar(
            x + 0.18,
            measured,
            yerr=err,
            fmt="kD",
            ms=5,
            capsize=3,
            label="measured mean F̃(θ_j) − F(θ*) (95%)",
        )
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xticks(x, [_fraction(t) for t in temps], fontsize=7)
        ax.set_xlabel("temperature T")
        ax.set_title(
            f"{d.eval_set} ({d.kind}), {d.n_runs} runs\nmedian |sum − measured|/|measured| "
            f"{d.median_relative_error:.1%}",
            fontsize=9,
        )
    for row in axes:
        row[0].set_ylabel("expected objective gap")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.7 / (3.3 * nrows + 0.7), 1, 1))
    return fig


def plot_stationary_checks(summary: Mapping[str, Any]) -> Figure | None:
    """Wide-basin probability vs T: Fokker–Planck grid law, Gibbs law and Laplace weights."""
    curves = summary.get("p_wide")
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    styles = {
        "fokker_planck": ("k-", "Fokker–Planck (grid)"),
        "gibbs": ("C3--", "Gibbs in L"),
        "laplace": ("C1:", "Laplace"),
        "fokker_planck_data": ("C0-o", "FP, data noise"),
        "fokker_planck_data_untrusted": ("C0x", "FP, data noise: depends on the box's walls"),
        "gibbs_data": ("C0:", "Gibbs in L, data noise"),
    }
    temps = np.asarray(curves["temperatures"], dtype=float)
    for name, (fmt, label) in styles.items():
        if name in curves and any(v is not None for v in curves[name]):
            values = np.asarray(curves[name], dtype=float)  # None (left out) -> NaN
            ax.plot(np.log2(temps), values, fmt, label=label, ms=3)
    tc = summary.get("crossover_temperature")
    if tc and math.isfinite(tc):
        ax.axvline(math.log2(tc), color="C1", lw=0.8, ls="-.", label=f"Laplace T_c = {tc:.3g}")
    ax.axhline(0.5, color="0.7", lw=0.6)
    _log2_ticks(ax, "x", list(temps))
    ax.set_xlabel("temperature T")
    ax.set_ylabel("P(wide basin)")
    ax.set_title("2-D double well: stationary mass of the wide basin", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


#: The sweep figures of the report, by anchor: (title, function).
SWEEP_FIGURES = {
    "fig-heatmap": ("η × B grid with iso-T lines", plot_heatmap),
    "fig-curves": ("Loss vs epoch along iso-T lines", plot_curves_by_temperature),
    "fig-control": ("Control: loss vs epoch along fixed-lr lines", plot_control_curves),
    "fig-invariance": ("Collapse scores", plot_invariance_scores),
    "fig-test-vs-t": ("Loss vs T per evaluation set", plot_test_loss_vs_temperature),
    "fig-curvature": ("Curvature vs T", plot_curvature_vs_temperature),
    "fig-shift": ("Shift decomposition vs T", plot_shift_decomposition),
    "fig-mechanisms": ("The three curvature mechanisms vs T (stationary runs)", plot_mechanisms),
}
