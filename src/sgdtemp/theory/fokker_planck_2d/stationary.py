r"""The stationary law of a 2-D landscape's SGD diffusion, its basins and how far to trust them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from sgdtemp.errors import UserError, require_positive
from sgdtemp.landscapes._base import AbstractLandscape
from sgdtemp.theory.fokker_planck_2d.basins import (
    Basin2D,
    _merge_spurious,
    effective_potential,
    gibbs_density_2d,
    steepest_descent_basins,
)
from sgdtemp.theory.fokker_planck_2d.domain import (
    _check_resolution,
    _minimum_spreads,
    auto_domain,
    fokker_planck_from_landscape,
    on_points,
    shaped_grid,
)
from sgdtemp.theory.fokker_planck_2d.grid import MIN_GRID, FloatArray, Grid2D, IntArray
from sgdtemp.theory.fokker_planck_2d.operator import FokkerPlanck2D

__all__ = ["Stationary2D", "stationary_2d"]

# Stationary2D.trusted: basin probabilities that move by more than this when the walls change
# are the box's, not the model's.
WALL_SENSITIVITY_TOL = 0.005
# ... passages through limited cells per passage between basins above which they may matter.
LIMITED_FLUX_TOL = 0.01
# ... mass in the outer ring of cells above which the box cuts the law.
BOUNDARY_MASS_TOL = 1e-4


@dataclass(frozen=True, eq=False)
class Stationary2D:
    r"""Stationary law of the 2-D SGD diffusion on a grid (see :func:`stationary_2d`).

    Attributes:
        grid: the grid.
        temperature: $T$.
        density: stationary density, ``(nx, ny)``, $\sum p\,h_xh_y = 1$.
        loss: $L$ on the grid, ``(nx, ny)``.
        effective_potential: $-\tfrac T2\log p$, minimum 0, ``(nx, ny)``.
        current: stationary probability current, ``(nx, ny, 2)``.
        max_current: $\max|J|$.
        current_ratio: $\max|J| / \max|p\nabla L|$: the current relative to the drift flux it
            would have to balance; ~1e-15 under detailed balance, O(0.01..1) when it fails.
        mass_error: $|\sum p\,h_xh_y - 1|$.
        residual: relative stationarity residual (:meth:`FokkerPlanck2D.residual`).
        min_density: smallest grid value of $p$ (never negative: every rate of the scheme is
            non-negative and :meth:`FokkerPlanck2D.stationary` only adds non-negative terms).
        limited_cells: cells whose cross-diffusion had to be limited (:mod:`.stencils`).
        limited_mass: stationary mass in those cells (where the scheme is inconsistent).
        limited_flux: stationary probability flowing into those cells per unit time.
        exchange_flux: stationary probability flowing from one basin into another per unit time
            (half the flow across all basin boundaries; NaN with a single basin).
        limited_flux_ratio: ``limited_flux / exchange_flux``: how often the process passes
            through limited cells per passage between basins (small: they cannot matter much).
        wall_flux: stationary probability per unit time that the walls turn back (jumps that
            hit a wall, :mod:`.jumps`).
        wall_flux_ratio: ``wall_flux / exchange_flux``.
        walls: the wall condition of ``density`` (``"no-flux"``).
        wall_sensitivity: largest change of a basin probability when the walls project instead
            (``"projected"``, :attr:`Basin2D.probability_projected`); NaN when not checked.
        stencil_width: widest jump of the stencil in cells, ``(x, y)``.
        boundary_mass: mass in the outer ring of cells (large: the domain cuts the law).
        labels: basin label of each cell, ``(nx, ny)``.
        basins: one :class:`Basin2D` per label.
        gibbs_density: $\propto e^{-L/T_G}$ with $T_G = T c/2$, ``(nx, ny)``.
        gibbs_noise: the $c$ used: $\operatorname{tr}C/2$ at the deepest minimizer ($\sigma^2$
            for $C = \sigma^2I$, where the Gibbs law is exact).
    """

    grid: Grid2D
    temperature: float
    density: FloatArray
    loss: FloatArray
    effective_potential: FloatArray
    current: FloatArray
    max_current: float
    current_ratio: float
    mass_error: float
    residual: float
    min_density: float
    limited_cells: int
    limited_mass: float
    limited_flux: float
    exchange_flux: float
    limited_flux_ratio: float
    wall_flux: float
    wall_flux_ratio: float
    walls: str
    wall_sensitivity: float
    stencil_width: tuple[int, int]
    boundary_mass: float
    labels: IntArray
    basins: tuple[Basin2D, ...]
    gibbs_density: FloatArray
    gibbs_noise: float

    @property
    def trusted(self) -> bool:
        r"""Whether the basin probabilities are the model's, not the box's or the scheme's.

        True when changing the wall condition moves no basin probability by more than
        ``WALL_SENSITIVITY_TOL`` (a NaN sensitivity, walls not checked, fails), the process
        passes through limited cells less than ``LIMITED_FLUX_TOL`` times per passage between
        basins, and the outer ring of cells holds less than ``BOUNDARY_MASS_TOL``.
        """
        return bool(
            self.wall_sensitivity <= WALL_SENSITIVITY_TOL
            and not self.limited_flux_ratio > LIMITED_FLUX_TOL
            and self.boundary_mass <= BOUNDARY_MASS_TOL
        )


def stationary_2d(
    landscape: AbstractLandscape,
    temperature: float,
    *,
    grid: int | Grid2D = 200,
    domain: tuple[float, float, float, float] | None = None,
    check_walls: bool = True,
) -> Stationary2D:
    r"""Stationary law of $d\theta = -\nabla L\,dt + \sqrt{T\,C(\theta)}\,dW$ for a 2-D landscape.

    Solves the Fokker–Planck equation (package docstring) on a grid with no-flux walls,
    assigns every cell to a basin by discrete steepest descent on $L$, and compares with the
    Gibbs law in $L$. It also says how far the basin probabilities can be trusted
    (:attr:`Stationary2D.trusted`): how much they move when the walls project the process back
    instead (a second solve, ``check_walls``), how often the process passes through the cells
    whose cross-diffusion was limited and through the walls, per passage between basins.
    Where the noise grows faster than the drift away from the minima (curvature-shaped noise
    with an exponential feature, say), the probability flux far out does not vanish with the
    density, and the basin probabilities depend on the box: then ``wall_sensitivity`` is large.

    Args:
        landscape: a 2-D landscape; ``noise_cov`` gives $C(\theta)$.
        temperature: $T = \eta/B > 0$.
        grid: ``n`` for about ``n * n`` cells shaped by :func:`shaped_grid`, or a ready
            :class:`Grid2D` (then ``domain`` is ignored).
        domain: ``(xmin, xmax, ymin, ymax)``; default :func:`auto_domain`.
        check_walls: also solve with projecting walls for ``wall_sensitivity`` (twice the work).

    Returns:
        The :class:`Stationary2D` law.

    Raises:
        UserError: on $T \le 0$, a grid too small or too coarse to resolve the basins (the
            message says which grid would), a minimum outside the domain, two minima in one grid
            basin, or a noise covariance that is not PSD somewhere on the grid.

    Example:
        >>> from sgdtemp.landscapes.double_well_2d import DoubleWell2D
        >>> st = stationary_2d(DoubleWell2D(), 0.3, grid=64)  # isotropic noise: Gibbs is exact
        >>> [abs(b.probability - b.gibbs_probability) < 1e-9 for b in st.basins]
        [True, True]
        >>> st.current_ratio < 1e-10  # detailed balance
        True
        >>> st.wall_sensitivity < 1e-9, st.trusted  # the walls hold nothing
        (True, True)
    """
    require_positive("temperature", temperature)
    if landscape.dim != 2:
        raise UserError(f"stationary_2d needs a 2-D landscape, got dim {landscape.dim}")
    if isinstance(grid, Grid2D):
        g = grid
    else:
        if int(grid) < MIN_GRID:
            raise UserError(f"grid {grid} is too small; use at least {MIN_GRID} cells per axis")
        box = domain if domain is not None else auto_domain(landscape, temperature)
        g = shaped_grid(landscape, temperature, box, int(grid))
    mins, stds = _minimum_spreads(landscape, temperature)
    _check_resolution(g, mins, stds)

    fp = fokker_planck_from_landscape(landscape, temperature, g)
    p = fp.stationary()
    assert fp.potential is not None
    loss = fp.potential
    labels, grid_minima = steepest_descent_basins(loss)
    labels, info = _merge_spurious(landscape, g, labels, grid_minima, mins)

    with torch.no_grad():
        c_min = landscape.noise_cov(landscape.minimizers()).numpy()
    deepest = int(np.argmin(on_points(landscape.loss)(mins)))
    gibbs_noise = float(np.trace(c_min[deepest])) / 2.0
    gibbs = gibbs_density_2d(loss, 0.5 * temperature * gibbs_noise, g.cell_area)

    area = g.cell_area
    other = np.full(p.shape, math.nan)
    if check_walls:
        other = FokkerPlanck2D(
            g,
            lambda pts: 0.5 * temperature * on_points(landscape.noise_cov)(pts),
            drift=lambda pts: -on_points(landscape.grad)(pts),
            potential=on_points(landscape.loss),
            walls="projected",
        ).stationary()
    basins = []
    for label, (loc, exact) in enumerate(info):
        with torch.no_grad():
            t_loc = torch.from_numpy(np.asarray(loc, dtype=np.float64))
            l_val = float(landscape.loss(t_loc))
            eig = torch.linalg.eigvalsh(landscape.hessian(t_loc)).numpy()
        mask = labels == label
        basins.append(
            Basin2D(
                location=np.asarray(loc, dtype=np.float64),
                probability=float(p[mask].sum() * area),
                gibbs_probability=float(gibbs[mask].sum() * area),
                loss=l_val,
                hessian_eigenvalues=eig,
                exact=exact,
                probability_projected=float(other[mask].sum() * area),
            )
        )
    sensitivity = max(abs(b.probability - b.probability_projected) for b in basins)
    exchange, limited_flux, wall_flux = _fluxes(fp, p * area, labels)

    current = fp.current(p)
    grad = on_points(landscape.grad)(g.points())
    drift_flux = float(np.abs(p[..., None] * grad).max())
    max_current = float(np.sqrt((current**2).sum(-1)).max())
    ring = np.ones_like(p, dtype=bool)
    ring[1:-1, 1:-1] = False
    return Stationary2D(
        grid=g,
        temperature=float(temperature),
        density=p,
        loss=loss,
        effective_potential=effective_potential(p, temperature),
        current=current,
        max_current=max_current,
        current_ratio=max_current / drift_flux if drift_flux > 0 else 0.0,
        mass_error=fp.mass_error(p),
        residual=fp.residual(p),
        min_density=float(p.min()),
        limited_cells=fp.limited_cells,
        limited_mass=float(np.abs(p[fp.limited]).sum() * area),
        limited_flux=limited_flux,
        exchange_flux=exchange,
        limited_flux_ratio=limited_flux / exchange if exchange > 0 else math.nan,
        wall_flux=wall_flux,
        wall_flux_ratio=wall_flux / exchange if exchange > 0 else math.nan,
        walls=fp.walls,
        wall_sensitivity=sensitivity,
        stencil_width=fp.stencil_width,
        boundary_mass=float(np.abs(p[ring]).sum() * area),
        labels=labels,
        basins=tuple(basins),
        gibbs_density=gibbs,
        gibbs_noise=gibbs_noise,
    )


def _fluxes(fp: FokkerPlanck2D, mass: FloatArray, labels: IntArray) -> tuple[float, float, float]:
    r"""Stationary flows per unit time: between basins (one way), into limited cells, at walls.

    Each jump $k \to l$ carries the flow $m_kQ_{kl}$ ($m$ the cell masses ``(nx, ny)``). Between
    basins: half the flow of the jumps whose ends lie in different basins (for two basins, the
    flow from either into the other); into limited cells: the jumps from an unlimited cell into a
    limited one; at the walls: the rates of the jumps that hit a wall, times $m_k$.
    """
    m, lab, lim = mass.ravel(), labels.ravel(), fp.limited.ravel()
    flow = m[fp._src] * fp._rate
    across = lab[fp._src] != lab[fp._dst]
    exchange = 0.5 * float(flow[across].sum()) if across.any() else math.nan
    limited_flux = float(flow[~lim[fp._src] & lim[fp._dst]].sum())
    wall_flux = float((m * fp.wall_rate.ravel()).sum())
    return exchange, limited_flux, wall_flux
