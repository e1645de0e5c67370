"""Figures of the two-minima study, drawn from its stored summary and arrays only."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["plot_two_minima"]

_COLORS = {"sgd": "C0", "sde": "C1", "fp": "k", "gibbs": "C3", "other": "0.45"}


def _cells(summary: Mapping[str, Any], noise: str) -> list[dict[str, Any]]:
    return [c for c in summary["cells"] if c["noise"] == noise]


def _temps(cells: list[dict[str, Any]]) -> list[float]:
    return sorted({c["T"] for c in cells})


def _landscape(summary: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Figure:
    noises = list(summary["noise_models"])
    fig, axes = plt.subplots(1, len(noises), figsize=(5.5 * len(noises), 4), squeeze=False)
    for ax, noise in zip(axes[0], noises):
        g = arrays[f"{noise}_grid"]
        info = summary["noise_models"][noise]
        lo, hi = min(info["minimizers"]) - 2.5, max(info["minimizers"]) + 3.0
        sel = (g >= lo) & (g <= hi)
        ax.plot(g[sel], arrays[f"{noise}_train_loss"][sel], label="train L", color="k")
        ax.plot(g[sel], arrays[f"{noise}_sampling_test_loss"][sel], "--", label="test (sampling)")
        ax.plot(g[sel], arrays[f"{noise}_domain_test_loss"][sel], ":", label="test (domain)")
        ax.axvline(info["barrier"], color="0.7", lw=0.8)
        ax2 = ax.twinx()
        ax2.plot(g[sel], arrays[f"{noise}_noise_var"][sel], color="C2", alpha=0.6)
        ax2.set_ylabel("per-example gradient variance C(θ)", color="C2")
        ax.set_title(f"{noise}: train and test losses")
        ax.set_xlabel("θ")
        ax.set_ylabel("loss")
        ax.legend(loc="upper center", fontsize=8)
    fig.tight_layout()
    return fig


def _densities(summary: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Figure:
    noises = list(summary["noise_models"])
    n_t = max(len(_temps(_cells(summary, n))) for n in noises)
    fig, axes = plt.subplots(
        len(noises), n_t, figsize=(3.2 * n_t, 2.8 * len(noises)), squeeze=False, sharex="row"
    )
    for row, noise in zip(axes, noises):
        cells = _cells(summary, noise)
        g = arrays[f"{noise}_grid"]
        edges = arrays[f"{noise}_hist_edges"]
        centers = 0.5 * (edges[1:] + edges[:-1])
        info = summary["noise_models"][noise]
        lo, hi = min(info["minimizers"]) - 2.0, max(info["minimizers"]) + 2.5
        for ax, temp in zip(row, _temps(cells)):
            cell = min((c for c in cells if c["T"] == temp), key=lambda c: c["batch_size"])
            key = f"{noise}_T{_temps(cells).index(temp)}_B{cell['batch_size']}"
            ax.plot(g, arrays[f"{key}_fp_density"], color=_COLORS["fp"], label="Fokker–Planck")
            if cell["simulated"]:
                ax.step(
                    centers,
                    arrays[f"{key}_sgd_hist"],
                    where="mid",
                    color=_COLORS["sgd"],
                    label="SGD",
                )
                ax.step(
                    centers,
                    arrays[f"{key}_sde_hist"],
                    where="mid",
                    color=_COLORS["sde"],
                    alpha=0.7,
                    label="SDE",
                )
                flag = "" if cell["equilibrated"] else " (not equilibrated)"
            else:
                flag = " (not simulated: relaxation > budget)"
            ax.set_xlim(lo, hi)
            ax.set_title(f"{noise} T={temp:g} B={cell['batch_size']}{flag}", fontsize=8)
            ax.set_xlabel("θ")
        row[0].set_ylabel("stationary density")
        simulated = [ax for ax in row if len(ax.get_lines()) > 1]  # FP, SGD and SDE
        (simulated or [row[0]])[0].legend(fontsize=7)
        for ax in row[len(_temps(cells)) :]:
            ax.set_visible(False)
    fig.tight_layout()
    return fig


def _p_wide(summary: Mapping[str, Any]) -> Figure:
    noises = list(summary["noise_models"])
    fig, axes = plt.subplots(1, len(noises), figsize=(5.5 * len(noises), 4), squeeze=False)
    for ax, noise in zip(axes[0], noises):
        cells = _cells(summary, noise)
        temps = _temps(cells)
        # SDE markers slightly right of their T, SGD's on top, so neither hides the other.
        for source, marker, shift, z in (("sde", "s", 1.012, 2), ("sgd", "o", 1.0, 3)):
            for c in cells:
                if not c["simulated"]:
                    continue
                stats = c[source]
                face = _COLORS[source] if stats["equilibrated"] else "none"
                ax.errorbar(
                    c["T"] * shift,
                    stats["p_wide"],
                    zorder=z,
                    yerr=stats["stderr"],
                    fmt=marker,
                    mfc=face,
                    color=_COLORS[source],
                    ms=5,
                )
            label = source.upper()
            if source == "sgd":
                label += f" ({summary['sampling']['sampling']})"
            ax.plot([], [], marker, color=_COLORS[source], label=label)
        _other_sampling(ax, summary, cells)
        fp = [np.mean([c["p_wide_fp"] for c in cells if c["T"] == t]) for t in temps]
        gibbs = [np.mean([c["p_wide_gibbs"] for c in cells if c["T"] == t]) for t in temps]
        ax.plot(temps, fp, "-", color=_COLORS["fp"], label="Fokker–Planck (exact)")
        ax.plot(temps, gibbs, "--", color=_COLORS["gibbs"], label="Gibbs in L")
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("temperature T = lr / B")
        ax.set_ylabel("P(wide basin)")
        ax.set_title(f"{noise}\n(open markers: not equilibrated; none: not simulated)", fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _other_sampling(ax: Any, summary: Mapping[str, Any], cells: list[dict[str, Any]]) -> None:
    """SGD with the other minibatch sampling, where it ran: grey crosses left of T, not judged."""
    shown = [c for c in cells if c.get("sampling_comparison")]
    for c in shown:
        stats = c["sampling_comparison"]["sgd"]
        ax.errorbar(
            c["T"] / 1.012,
            stats["p_wide"],
            yerr=stats["stderr"],
            fmt="x",
            color=_COLORS["other"],
            ms=5,
            zorder=1,
            alpha=1.0 if stats["equilibrated"] else 0.4,
        )
    if shown:
        label = f"SGD {summary['sampling_comparison']['shown_sampling']} (shown, not judged)"
        ax.plot([], [], "x", color=_COLORS["other"], label=label)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def _test_loss(summary: Mapping[str, Any]) -> Figure:
    """Expected test loss vs T: the exact law's decomposition stacked, SGD's measurement on it."""
    noises = list(summary["noise_models"])
    kinds = ("sampling", "domain")
    terms = ("shift_curvature", "cross", "bias_curvature", "covariance_curvature")
    fig, axes = plt.subplots(len(noises), 2, figsize=(11, 3.6 * len(noises)), squeeze=False)
    for row, noise in zip(axes, noises):
        cells = _cells(summary, noise)
        temps = _temps(cells)
        for ax, kind in zip(row, kinds):
            x = np.arange(len(temps))
            groups = [[c for c in cells if c["T"] == t] for t in temps]
            mixed = [[c["decomposition_fp"][kind]["mixed"] for c in g] for g in groups]
            depth = np.array(
                [
                    _mean([m["predicted_test_loss"] - sum(m[k] for k in terms) for m in ms])
                    for ms in mixed
                ]
            )
            bottom_pos = np.zeros(len(temps))
            bottom_neg = np.zeros(len(temps))
            for term in terms:
                vals = np.array([_mean([m[term] for m in ms]) for ms in mixed])
                base = np.where(vals >= 0, bottom_pos, bottom_neg)
                ax.bar(x, vals, bottom=depth + base, label=term.replace("_", " "))
                bottom_pos += np.where(vals >= 0, vals, 0)
                bottom_neg += np.where(vals < 0, vals, 0)
            law = [_mean([c["test_loss_fp"][kind] for c in g]) for g in groups]
            measured = [
                _mean([c["test_loss"][kind] for c in g if c["simulated"] and c["equilibrated"]])
                for g in groups
            ]
            ax.plot(x, law, "k_", ms=20, mew=2, label="Fokker–Planck law (exact)")
            ax.plot(x, measured, "o", color="k", mfc="white", label="SGD (equilibrated cells)")
            ax.plot(x, depth, "_", color="0.3", ms=20, label="test depth L̃*")
            ax.set_xticks(x, [f"{t:g}" for t in temps])
            ax.set_xlabel("temperature T")
            ax.set_ylabel("expected test loss")
            ax.set_title(f"{noise}: {kind} shift (bars: the law's decomposition)")
            lo = float(np.nanmin([*depth, *law]))
            ax.set_ylim(bottom=lo - 0.1 * abs(lo) - 0.05)
        row[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def _iso_t(summary: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Figure:
    noises = list(summary["noise_models"])
    n_t = max(len(_temps(_cells(summary, n))) for n in noises)
    fig, axes = plt.subplots(
        len(noises), n_t, figsize=(3.2 * n_t, 2.8 * len(noises)), squeeze=False, sharex="row"
    )
    for row, noise in zip(axes, noises):
        cells = _cells(summary, noise)
        temps = _temps(cells)
        edges = arrays[f"{noise}_hist_edges"]
        centers = 0.5 * (edges[1:] + edges[:-1])
        info = summary["noise_models"][noise]
        lo, hi = min(info["minimizers"]) - 2.0, max(info["minimizers"]) + 2.5
        for ax, temp in zip(row, temps):
            simulated = [c for c in cells if c["T"] == temp and c["simulated"]]
            for c in simulated:
                key = f"{noise}_T{temps.index(temp)}_B{c['batch_size']}"
                ax.step(
                    centers,
                    arrays[f"{key}_sgd_hist"],
                    where="mid",
                    label=f"B={c['batch_size']}, lr={c['lr']:.3g}",
                )
            ax.set_xlim(lo, hi)
            ax.set_title(
                f"{noise} T={temp:g}" + ("" if simulated else " (not simulated)"), fontsize=8
            )
            if simulated:
                ax.legend(fontsize=6)
            ax.set_xlabel("θ")
        row[0].set_ylabel("SGD density (iso-T pairs)")
        for ax in row[len(temps) :]:
            ax.set_visible(False)
    fig.tight_layout()
    return fig


_FIGURES = {
    "landscape": lambda s, a: _landscape(s, a),
    "densities": lambda s, a: _densities(s, a),
    "p_wide": lambda s, a: _p_wide(s),
    "test_loss": lambda s, a: _test_loss(s),
    "iso_temperature": lambda s, a: _iso_t(s, a),
}


def plot_two_minima(
    summary: Mapping[str, Any], arrays: Mapping[str, np.ndarray], out_dir: Path
) -> list[Path]:
    """Write the study's figures as PNG files into ``out_dir``; returns their paths."""
    paths = []
    for name, make in _FIGURES.items():
        fig = make(summary, arrays)
        path = Path(out_dir) / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
