r"""The box and the grid for a landscape's stationary law, and the operator built from it."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from sgdtemp.errors import UserError, require_positive
from sgdtemp.landscapes._base import AbstractLandscape
from sgdtemp.theory.fokker_planck_2d.grid import MIN_GRID, FloatArray, Grid2D, PointFn
from sgdtemp.theory.fokker_planck_2d.operator import FokkerPlanck2D
from sgdtemp.theory.lyapunov import lyapunov_continuous

__all__ = ["auto_domain", "shaped_grid", "fokker_planck_from_landscape", "on_points"]

N_STD_DOMAIN = 8.0  # auto_domain: half-width in stationary standard deviations at each minimum
BOUNDARY_WEIGHT = 1e-12  # auto_domain: Gibbs weight allowed on the box edge


def on_points(fn: Callable[[torch.Tensor], torch.Tensor]) -> PointFn:
    """Wrap a torch function of ``(..., 2)`` points as a float64 numpy function."""

    def wrapped(pts: FloatArray) -> FloatArray:
        with torch.no_grad():
            return fn(torch.from_numpy(np.ascontiguousarray(pts, dtype=np.float64))).numpy()

    return wrapped


def fokker_planck_from_landscape(
    landscape: AbstractLandscape, temperature: float, grid: Grid2D
) -> FokkerPlanck2D:
    r"""The Fokker–Planck operator of $d\theta = -\nabla L\,dt + \sqrt{T C}\,dW$ on ``grid``.

    Args:
        landscape: a 2-D landscape; its ``noise_cov`` gives $C(\theta)$.
        temperature: $T = \eta/B > 0$.
        grid: the grid.

    Returns:
        The operator, with $D = \tfrac T2 C$ and potential $L$.

    Raises:
        UserError: if the landscape is not 2-D, $T \le 0$, or $C$ is not PSD on the grid.
    """
    require_positive("temperature", temperature)
    if landscape.dim != 2:
        raise UserError(
            f"the 2-D Fokker–Planck solver needs a 2-D landscape, got dim {landscape.dim}"
        )
    cov, grad = on_points(landscape.noise_cov), on_points(landscape.grad)
    return FokkerPlanck2D(
        grid,
        lambda pts: 0.5 * temperature * cov(pts),
        drift=lambda pts: -grad(pts),
        potential=on_points(landscape.loss),
    )


def _minimum_spreads(
    landscape: AbstractLandscape, temperature: float
) -> tuple[FloatArray, FloatArray]:
    """Minimizers ``(k, 2)`` and the linearized stationary std of each coordinate ``(k, 2)``."""
    mins = landscape.minimizers().to(torch.float64)
    with torch.no_grad():
        hess = landscape.hessian(mins).numpy()
        cov = landscape.noise_cov(mins).numpy()
    stds = []
    for h, c in zip(hess, cov):
        sigma = np.asarray(lyapunov_continuous(h, c, temperature))
        stds.append(np.sqrt(np.maximum(np.diag(sigma), 0.0)))
    return mins.numpy(), np.array(stds)


def auto_domain(
    landscape: AbstractLandscape, temperature: float
) -> tuple[float, float, float, float]:
    r"""A box that holds the stationary law of a 2-D landscape: ``(xmin, xmax, ymin, ymax)``.

    Start from the minimizers $\pm 8$ linearized stationary standard deviations (Lyapunov), then
    widen each side while a Gibbs-like weight $e^{-(L - L_{\min})/D}$ exceeds $10^{-12}$ on it,
    with $D = \tfrac T2\max C_{xx}$ over the minima on the $x$ edges and $\tfrac T2\max C_{yy}$
    on the $y$ edges. This is a heuristic; :class:`Stationary2D` reports the mass that the
    solution puts on the outer ring of cells.

    Raises:
        UserError: if $T \le 0$ or the landscape is not 2-D.
    """
    require_positive("temperature", temperature)
    if landscape.dim != 2:
        raise UserError(f"auto_domain needs a 2-D landscape, got dim {landscape.dim}")
    mins, stds = _minimum_spreads(landscape, temperature)
    lo = (mins - N_STD_DOMAIN * stds).min(axis=0)
    hi = (mins + N_STD_DOMAIN * stds).max(axis=0)
    with torch.no_grad():
        c_min = landscape.noise_cov(landscape.minimizers().to(torch.float64)).numpy()
        l_min = float(landscape.loss(landscape.minimizers()).min())
    d_x = 0.5 * temperature * float(c_min[:, 0, 0].max())
    d_y = 0.5 * temperature * float(c_min[:, 1, 1].max())
    loss = on_points(landscape.loss)
    for _ in range(30):
        gx, gy = np.linspace(lo[0], hi[0], 65), np.linspace(lo[1], hi[1], 65)
        excess = loss(np.stack(np.meshgrid(gx, gy, indexing="ij"), axis=-1)) - l_min
        with np.errstate(over="ignore"):
            wx, wy = np.exp(-excess / d_x), np.exp(-excess / d_y)
        edges = [wx[0, :].max(), wx[-1, :].max(), wy[:, 0].max(), wy[:, -1].max()]
        if max(edges) <= BOUNDARY_WEIGHT:
            break
        width = hi - lo
        for side, weight in enumerate(edges):
            if weight > BOUNDARY_WEIGHT:
                axis, sign = divmod(side, 2)
                if sign == 0:
                    lo[axis] -= 0.25 * width[axis]
                else:
                    hi[axis] += 0.25 * width[axis]
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def shaped_grid(
    landscape: AbstractLandscape,
    temperature: float,
    box: tuple[float, float, float, float],
    n: int,
) -> Grid2D:
    r"""About ``n * n`` cells on ``box``, shaped so that both axes resolve the basins equally.

    The cell aspect ratio $h_y/h_x$ is the ratio of the smallest linearized stationary spreads
    (Lyapunov, $\sqrt{\Sigma_{yy}}$ over $\sqrt{\Sigma_{xx}}$, minimized over the minimizers),
    clamped to $[1/16, 16]$; then $n_xn_y \approx n^2$. (Cells far from the square in the noise's
    own metric widen the Selling stencil; the solver reports any cells it had to limit.)

    Raises:
        UserError: if ``n`` is below ``MIN_GRID``, the box is empty or $T \le 0$.
    """
    if n < MIN_GRID:
        raise UserError(f"grid {n} is too small; use at least {MIN_GRID} cells per axis")
    xmin, xmax, ymin, ymax = (float(v) for v in box)
    if not (xmax > xmin and ymax > ymin):
        raise UserError(f"empty domain {box}; give xmin < xmax and ymin < ymax")
    _, stds = _minimum_spreads(landscape, temperature)
    sx, sy = float(stds[:, 0].min()), float(stds[:, 1].min())
    ratio = float(np.clip(sy / sx, 1 / 16, 16)) if sx > 0 and sy > 0 else 1.0
    nx = max(MIN_GRID, round(n * math.sqrt(ratio * (xmax - xmin) / (ymax - ymin))))
    ny = max(MIN_GRID, round(n * n / nx))
    return Grid2D(xmin, xmax, ymin, ymax, nx, ny)


def _check_resolution(grid: Grid2D, mins: FloatArray, stds: FloatArray) -> None:
    """Raise :class:`UserError` if a minimum lies off the grid or its spread is under a cell."""
    for m, s in zip(mins, stds):
        where = f"({m[0]:.4g}, {m[1]:.4g})"
        if not (grid.xmin < m[0] < grid.xmax and grid.ymin < m[1] < grid.ymax):
            raise UserError(f"the minimum at {where} lies outside the domain; enlarge the domain")
        ratio = max(grid.hx / s[0], grid.hy / s[1]) if s.min() > 0 else math.inf
        if ratio > 1.0:
            need = math.ceil(math.sqrt(grid.nx * grid.ny) * ratio)
            raise UserError(
                f"grid {grid.nx} x {grid.ny} is too coarse to resolve the basin at {where}: "
                f"cells ({grid.hx:.3g} x {grid.hy:.3g}) are wider than its stationary spread "
                f"({s[0]:.3g} x {s[1]:.3g}); use a grid of at least {need}"
            )
        margin = (
            min(m[0] - grid.xmin, grid.xmax - m[0]) / grid.hx,
            min(m[1] - grid.ymin, grid.ymax - m[1]) / grid.hy,
        )
        if min(margin) < 2:
            raise UserError(f"the minimum at {where} lies on the domain's edge; enlarge the domain")
