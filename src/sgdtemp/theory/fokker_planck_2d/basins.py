"""Basins of attraction on the grid, the Gibbs reference and the effective potential."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from sgdtemp.errors import UserError, require_positive
from sgdtemp.landscapes._base import AbstractLandscape
from sgdtemp.theory.fokker_planck_2d.domain import on_points
from sgdtemp.theory.fokker_planck_2d.grid import FloatArray, Grid2D, IntArray

__all__ = [
    "Basin2D",
    "steepest_descent_basins",
    "effective_potential",
    "gibbs_density_2d",
]


def steepest_descent_basins(values: FloatArray) -> tuple[IntArray, IntArray]:
    """Label each grid cell by the grid minimum that discrete steepest descent reaches.

    Every cell points to the lowest of itself and its 8 neighbours, ties broken by the smaller
    flat index (a strict order, so there are no cycles and a flat valley floor has one root);
    following the pointers (by pointer doubling) ends at a local minimum of the grid values.

    Args:
        values: the loss on the grid, ``(nx, ny)``.

    Returns:
        ``(labels, minima)``: labels ``(nx, ny)`` in ``0..m-1`` and the grid minima's indices
        ``(m, 2)``, ordered by ``x`` then ``y``.

    Example:
        >>> x = np.linspace(-2, 2, 41)
        >>> v = ((x**2 - 1) ** 2)[:, None] + np.zeros((1, 6))
        >>> labels, minima = steepest_descent_basins(v)
        >>> minima.tolist(), int(labels[0, 5]), int(labels[-1, 0])
        ([[10, 0], [30, 0]], 0, 1)
    """
    v = np.asarray(values, dtype=np.float64)
    nx, ny = v.shape
    flat = np.arange(nx * ny).reshape(nx, ny)
    best_v, best_k = v.copy(), flat.copy()
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            if di == dj == 0:
                continue
            si = slice(max(0, -di), nx - max(0, di))  # cells whose neighbour (di, dj) exists
            sj = slice(max(0, -dj), ny - max(0, dj))
            ti = slice(max(0, di), nx - max(0, -di))
            tj = slice(max(0, dj), ny - max(0, -dj))
            nv, nk = v[ti, tj], flat[ti, tj]
            bv, bk = best_v[si, sj], best_k[si, sj]
            better = (nv < bv) | ((nv == bv) & (nk < bk))
            bv[better], bk[better] = nv[better], nk[better]
    parent = best_k.ravel()
    while True:
        nxt = parent[parent]
        if np.array_equal(nxt, parent):
            break
        parent = nxt
    roots = np.unique(parent)  # sorted flat index = ordered by x, then y
    labels = np.searchsorted(roots, parent).reshape(nx, ny)
    minima = np.stack(np.unravel_index(roots, (nx, ny)), axis=-1).astype(np.int64)
    return labels.astype(np.int64), minima


def _merge_spurious(
    landscape: AbstractLandscape,
    grid: Grid2D,
    labels: IntArray,
    grid_minima: IntArray,
    mins: FloatArray,
) -> tuple[IntArray, list[tuple[FloatArray, bool]]]:
    """Merge grid basins that hold no minimizer into the basin continuous descent reaches.

    A grid minimum away from every declared minimizer is an artefact of discrete steepest
    descent (a curved valley on elongated cells) or a true minimum of $L$ on the box edge. From
    its cell, L-BFGS-B on $L$ (bounded by the box) decides: if it ends in the basin of a declared
    minimizer the grid basin is merged into that one, otherwise it stays (not exact).

    Returns:
        New labels ``(nx, ny)`` and per label ``(location, exact)``.

    Raises:
        UserError: if two declared minimizers fall into one grid basin (grid too coarse).
    """
    owner: dict[int, int] = {}
    for k, m in enumerate(mins):
        cell = grid.cell_of(m)
        assert cell is not None  # _check_resolution put every minimum inside
        label = int(labels[cell])
        if label in owner:
            other = mins[owner[label]]
            raise UserError(
                f"grid {grid.nx} x {grid.ny} is too coarse to separate the minima at "
                f"({other[0]:.4g}, {other[1]:.4g}) and ({m[0]:.4g}, {m[1]:.4g}); use a finer grid"
            )
        owner[label] = k
    loss, grad = on_points(landscape.loss), on_points(landscape.grad)
    bounds = [(grid.xmin, grid.xmax), (grid.ymin, grid.ymax)]
    target = np.arange(len(grid_minima))
    for label, ij in enumerate(grid_minima):
        if label in owner:
            continue
        start = grid.points()[ij[0], ij[1]]
        res = minimize(
            lambda z: float(loss(z)), start, jac=lambda z: grad(z), method="L-BFGS-B", bounds=bounds
        )
        cell = grid.cell_of(res.x)
        if cell is not None and int(labels[cell]) in owner:
            target[label] = int(labels[cell])
    kept = np.unique(target)
    new_labels = np.searchsorted(kept, target[labels])
    info = []
    for label in kept:
        if int(label) in owner:
            info.append((mins[owner[int(label)]], True))
        else:
            ij = grid_minima[label]
            info.append((grid.points()[ij[0], ij[1]], False))
    return new_labels.astype(np.int64), info


def effective_potential(density: FloatArray, temperature: float) -> FloatArray:
    r"""$\Phi_{\rm eff} = -\tfrac T2\log p$, shifted to minimum 0 (NaN where $p \le 0$).

    With $C = \sigma^2 I$ this is $(L - L_{\min})/\sigma^2$; in general it folds the noise into
    the landscape that the stationary law sees.
    """
    p = np.asarray(density, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        phi = np.where(p > 0, -0.5 * temperature * np.log(np.where(p > 0, p, 1.0)), np.nan)
    return phi - np.nanmin(phi)


def gibbs_density_2d(loss: FloatArray, gibbs_temperature: float, cell_area: float) -> FloatArray:
    r"""Gibbs law $\propto e^{-L/T_G}$ on the grid, normalized to $\sum_k p_k\,\text{area} = 1$.

    For $C = \sigma^2 I$ the Fokker–Planck stationary law is Gibbs with $T_G = T\sigma^2/2$.
    """
    require_positive("gibbs_temperature", gibbs_temperature)
    loss = np.asarray(loss, dtype=np.float64)
    w = np.exp(-(loss - loss.min()) / gibbs_temperature)
    return w / (w.sum() * cell_area)


@dataclass(frozen=True)
class Basin2D:
    r"""One basin of attraction and its stationary mass.

    Attributes:
        location: the minimizer ``(2,)`` (the landscape's exact one, else the grid cell's centre).
        probability: stationary mass of the basin's cells.
        gibbs_probability: mass under the Gibbs law in $L$ (see :class:`Stationary2D`).
        loss: $L$ at ``location``.
        hessian_eigenvalues: eigenvalues of $\nabla^2L$ at ``location``, ascending, ``(2,)``.
        exact: True when ``location`` is one of the landscape's declared minimizers.
        probability_projected: the basin's mass when the walls project the process back into
            the box instead of reflecting it along $Dn$ (:mod:`.jumps`); NaN when not solved.
    """

    location: FloatArray
    probability: float
    gibbs_probability: float
    loss: float
    hessian_eigenvalues: FloatArray
    exact: bool
    probability_projected: float = float("nan")
