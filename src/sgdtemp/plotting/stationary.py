"""Figures of stationary laws, escape rates and discrete-time covariances.

Every function takes stored arrays (the keys that ``sgdtemp stationary --out`` writes to
``stationary.npz``) or plain theory outputs and returns a :class:`matplotlib.figure.Figure` built
without pyplot (Agg canvas, no global state); :func:`save_figures` writes them as PNG.

Array keys, 2-D: ``x`` ``(nx,)``, ``y`` ``(ny,)``, ``density``, ``loss``, ``effective_potential``,
``gibbs_density`` ``(nx, ny)``, ``current`` ``(nx, ny, 2)`` and the scalar ``gibbs_noise``.
1-D: ``x`` ``(n,)``, ``density``, ``loss``, ``effective_potential``, ``gibbs_density`` ``(n,)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

__all__ = [
    "plot_stationary",
    "plot_escape_rates",
    "plot_discrete_covariances",
    "save_figures",
]


def _figure(ncols: int = 1, width: float = 5.5, height: float = 4.2) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, np.atleast_1d(fig.subplots(1, ncols))


def _density_2d(arrays: Mapping[str, np.ndarray], samples: np.ndarray | None) -> Figure:
    x, y, p = arrays["x"], arrays["y"], arrays["density"]
    fig, axes = _figure(2 if samples is not None else 1)
    ax = axes[0]
    mesh = ax.pcolormesh(x, y, p.T, shading="nearest", cmap="viridis")
    fig.colorbar(mesh, ax=ax, label="p(θ)")
    ax.contour(x, y, arrays["gibbs_density"].T, levels=6, colors="w", linewidths=0.6)
    ax.set_title("Fokker–Planck density (white: Gibbs law in L)")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    if samples is not None:
        ax = axes[1]
        edges_x = np.concatenate([[x[0] - (x[1] - x[0]) / 2], (x[1:] + x[:-1]) / 2])
        edges_x = np.append(edges_x, x[-1] + (x[-1] - x[-2]) / 2)
        edges_y = np.concatenate([[y[0] - (y[1] - y[0]) / 2], (y[1:] + y[:-1]) / 2])
        edges_y = np.append(edges_y, y[-1] + (y[-1] - y[-2]) / 2)
        ax.hist2d(samples[:, 0], samples[:, 1], bins=[edges_x[::2], edges_y[::2]], cmap="viridis")
        ax.contour(x, y, p.T, levels=6, colors="w", linewidths=0.6)
        ax.set_title(f"SGD, {len(samples)} chains (white: Fokker–Planck)")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    return fig


def _potential_2d(arrays: Mapping[str, np.ndarray]) -> Figure:
    x, y = arrays["x"], arrays["y"]
    phi = arrays["effective_potential"]
    loss = arrays["loss"]
    c = float(arrays["gibbs_noise"])
    ref = (loss - loss.min()) / c
    top = float(np.nanpercentile(phi, 60))
    levels = np.linspace(0.0, top, 12)
    fig, axes = _figure(2)
    ax = axes[0]
    ax.contour(x, y, phi.T, levels=levels, cmap="viridis")
    ax.contour(x, y, ref.T, levels=levels, colors="k", linestyles="--", linewidths=0.6)
    ax.set_title("−(T/2) log p (colour) vs (L − L_min)/c (dashed)")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax = axes[1]
    j = int(np.argmin(np.abs(y - y[np.unravel_index(np.nanargmin(phi), phi.shape)[1]])))
    ax.plot(x, phi[:, j], label="effective potential −(T/2) log p")
    ax.plot(x, ref[:, j], "--", label="(L − L_min) / c")
    ax.set_ylim(0, top)
    ax.set_title(f"slice y = {y[j]:.3g}")
    ax.set_xlabel("x")
    ax.legend(fontsize=8)
    return fig


def _support(p: np.ndarray) -> tuple[slice, slice]:
    """Index ranges holding all cells with p > 1e-4 max(p), plus a small margin."""
    i, j = np.nonzero(p > 1e-4 * p.max())
    mi, mj = max(2, p.shape[0] // 20), max(2, p.shape[1] // 20)
    return (
        slice(max(i.min() - mi, 0), min(i.max() + mi + 1, p.shape[0])),
        slice(max(j.min() - mj, 0), min(j.max() + mj + 1, p.shape[1])),
    )


def _current_2d(arrays: Mapping[str, np.ndarray]) -> Figure:
    si, sj = _support(arrays["density"])
    x, y, j = arrays["x"][si], arrays["y"][sj], arrays["current"][si, sj]
    speed = np.sqrt((j**2).sum(-1))
    fig, axes = _figure()
    ax = axes[0]
    mesh = ax.pcolormesh(x, y, speed.T, shading="nearest", cmap="magma")
    fig.colorbar(mesh, ax=ax, label="|J|")
    if speed.max() > 0:
        # arrows on a coarse lattice where |J| exceeds 1 % of its maximum; longest = one step
        sx, sy = max(1, len(x) // 24), max(1, len(y) // 24)
        xs, ys, js = x[::sx], y[::sy], j[::sx, ::sy] / speed.max()
        strong = np.sqrt((js**2).sum(-1)) > 0.01
        dx = xs[1] - xs[0] if len(xs) > 1 else 1.0
        dy = ys[1] - ys[0] if len(ys) > 1 else 1.0
        u = np.where(strong, js[..., 0] * dx, np.nan).T
        v = np.where(strong, js[..., 1] * dy, np.nan).T
        ax.quiver(xs, ys, u, v, color="w", pivot="mid", angles="xy", scale_units="xy", scale=1.0)
    ax.contour(x, y, arrays["density"][si, sj].T, levels=5, colors="c", linewidths=0.5)
    ax.set_title(f"stationary current, max |J| = {speed.max():.3g}")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    return fig


def _density_1d(arrays: Mapping[str, np.ndarray], samples: np.ndarray | None) -> Figure:
    x = arrays["x"]
    fig, axes = _figure(2)
    ax = axes[0]
    if samples is not None:
        ax.hist(samples.ravel(), bins=120, density=True, color="0.8", label="SGD")
    ax.plot(x, arrays["density"], "k", label="Fokker–Planck (exact 1-D)")
    ax.plot(x, arrays["gibbs_density"], "C3--", label="Gibbs law in L")
    ax.set_xlabel("θ")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax = axes[1]
    loss = arrays["loss"]
    ax.plot(x, arrays["effective_potential"], label="effective potential ∫L'/C")
    ax2 = ax.twinx()
    ax2.plot(x, loss - loss.min(), "k--", label="L − L_min")
    ax.set_xlabel("θ")
    ax.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="upper right", fontsize=8)
    return fig


def plot_stationary(
    arrays: Mapping[str, np.ndarray], *, samples: np.ndarray | None = None
) -> dict[str, Figure]:
    """Figures of a stationary law: density (vs SGD samples), effective potential, current.

    Args:
        arrays: the stored arrays (module docstring); 2-D when ``"y"`` is present.
        samples: SGD final states to histogram next to the density, ``(chains, d)``.

    Returns:
        ``{"density": fig, "effective_potential": fig, "current": fig}`` (no current in 1-D,
        where it vanishes).
    """
    if "y" not in arrays:
        return {"density": _density_1d(arrays, samples)}
    return {
        "density": _density_2d(arrays, samples),
        "effective_potential": _potential_2d(arrays),
        "current": _current_2d(arrays),
    }


def plot_escape_rates(
    temperatures: ArrayLike,
    rates: Mapping[str, ArrayLike],
    *,
    errors: Mapping[str, ArrayLike] | None = None,
) -> Figure:
    """Escape rates against $1/T$ on a log scale, one line per method (Arrhenius plot).

    Args:
        temperatures: $T$, ``(K,)``.
        rates: method name -> rates ``(K,)`` (e.g. Eyring–Kramers, Fokker–Planck, SDE, SGD).
        errors: optional method name -> standard errors ``(K,)``.
    """
    t = np.asarray(temperatures, dtype=np.float64)
    fig, axes = _figure()
    ax = axes[0]
    for name, r in rates.items():
        err = None if errors is None or name not in errors else np.asarray(errors[name])
        ax.errorbar(1.0 / t, np.asarray(r), yerr=err, marker="o", capsize=3, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("1 / T")
    ax.set_ylabel("escape rate (per unit SDE time)")
    ax.legend(fontsize=8)
    return fig


def plot_discrete_covariances(
    lr_lambda_max: ArrayLike,
    theory_ratio: ArrayLike,
    *,
    measured: Mapping[str, tuple[ArrayLike, ArrayLike]] | None = None,
) -> Figure:
    r"""Trace ratio of SGD's to the SDE's stationary covariance against $\eta\lambda_{\max}$.

    Args:
        lr_lambda_max: $\eta\lambda_{\max}$, ``(K,)``.
        theory_ratio: the exact discrete-time ratio, ``(K,)``.
        measured: label -> (``lr_lambda_max``, ratio) of simulations.
    """
    fig, axes = _figure()
    ax = axes[0]
    ax.plot(lr_lambda_max, theory_ratio, "k-", label="exact discrete Lyapunov")
    ax.axhline(1.0, color="0.6", lw=0.8, label="SDE (temperature invariant)")
    ax.axvline(2.0, color="C3", lw=0.8, ls=":", label="stability edge ηλ = 2")
    for label, (xs, ys) in (measured or {}).items():
        ax.plot(xs, ys, "o", label=label)
    ax.set_xlabel("η λ_max")
    ax.set_ylabel("tr Σ_SGD / tr Σ_SDE at equal T")
    ax.legend(fontsize=8)
    return fig


def save_figures(figures: Mapping[str, Figure], out_dir: Path, *, prefix: str = "") -> list[Path]:
    """Save figures as ``<out_dir>/<prefix><name>.png``; returns the paths."""
    paths = []
    for name, fig in figures.items():
        path = Path(out_dir) / f"{prefix}{name}.png"
        fig.savefig(path, dpi=110)
        paths.append(path)
    return paths
