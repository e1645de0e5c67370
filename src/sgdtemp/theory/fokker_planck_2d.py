r"""Fokker–Planck equation of SGD in 2-D with a full, state-dependent diffusion tensor.

The SDE $d\theta = b(\theta)\,dt + \sqrt{T\,C(\theta)}\,dW$ with $b = -\nabla L$ (design.md) has the
Fokker–Planck equation, with diffusion tensor $D = \tfrac T2 C$,

$$\partial_t p = -\nabla\cdot J,\qquad J_i = b_i\,p - \sum_j \partial_j(D_{ij}\,p),$$

i.e. $\partial_t p = \nabla\cdot(p\nabla L) + \tfrac T2\sum_{ij}\partial_i\partial_j(C_{ij}p)$.

**Discretization.** Cell-centred finite volumes on a uniform $n_x\times n_y$ grid with reflecting
walls, written as the master equation of a continuous-time Markov chain on the cells:
$\dot p = A p$ with $A = Q^\top$, where $Q_{kl} \ge 0$ is the jump rate from cell $k$ to cell $l$
and $Q_{kk} = -\sum_{l\ne k} Q_{kl}$. The columns of $A$ sum to zero, so **mass is conserved
exactly** (to round-off); jumps that would leave the box are dropped (no flux through the walls).

1. *Diffusion: Selling's decomposition.* In grid units ($u = x/h_x$, $v = y/h_y$) the tensor is
   $D' = S D S$, $S = \operatorname{diag}(1/h_x, 1/h_y)$. Selling's algorithm turns the superbase
   $((1,0),(0,1),(-1,-1))$ into a $D'$-obtuse one $(e_1, e_2, e_3)$, and then
   $D' = \sum_i \rho_i\, f_if_i^\top$ with $\rho_i = -\langle e_j, D'e_k\rangle \ge 0$ and
   $f_i = e_i^\perp$ integer offsets (Fehrenbach & Mirebeau, "Sparse non-negative stencils for
   anisotropic diffusion", J. Math. Imaging Vis. 49, 2014). Each cell jumps to $k\pm f_i$ at rate
   $\rho_i$: **non-negative weights for every positive semi-definite $D$**, and the stencil is the
   usual five-point one for diagonal $D$ and Kushner's seven-point one when
   $|D'_{xy}| \le \min(D'_{xx}, D'_{yy})$. Stronger anisotropy relative to the cell aspect ratio
   widens the stencil (offsets like $(2, 1)$).
2. *Drift: exponential fitting along each stencil edge.* The rate from $k$ to $l = k + f$ is
   $\rho\,B(-z_{kl})$ with $B(z) = z/(e^z - 1) > 0$ and
   $z_{kl} = s^\top\bar D^{-1}\bar b = -z_{lk}$, $s = \theta_l - \theta_k$, bars denoting the mean
   of the two cells. Since $B(-z) - B(z) = z$, the first moment of the jumps is
   $\sum_i\rho_i z_i f_i = S^{-1}b$: the drift is exact, for any Péclet number, with positive
   rates (a Scharfetter–Gummel flux per edge). With a potential, $s\cdot\bar b$ is replaced by the
   difference $-(L_l - L_k)$, so for constant isotropic $D$ the chain satisfies detailed balance
   *exactly* with $p_k \propto e^{-L_k/D}$: the Gibbs law on the nodes and no spurious current.

**Positivity.** Every rate is non-negative, so $A$ is a generator and the stationary density is
non-negative, positive where the chain is irreducible (Perron–Frobenius): **positivity is
guaranteed for every PSD diffusion tensor**, cross terms included. The price is stencil width:
where the scaled tensor $D'$ is so anisotropic that Selling's offsets would exceed
``max_width`` cells (or the algorithm does not converge, $D$ nearly singular), the cell falls back
to the seven-point stencil with its cross-diffusion $|D'_{xy}|$ *limited* to
$\min(D'_{xx}, D'_{yy})$. That keeps positivity but is inconsistent there; such cells are
counted (``limited_cells``) and their stationary mass is reported. Refining one axis (changing
$h_y/h_x$ towards $\sqrt{D_{yy}/D_{xx}}$) removes them.

**Accuracy.** Second order in the grid spacing for smooth coefficients: Selling's second
differences are exact on quadratics and the exponential fitting perturbs the second moment by
$O(z^2) = O(h^2)$. Checked on manufactured stationary solutions with full, state-dependent $D$ in
``tests/theory/test_fokker_planck_2d.py``.

**Solvers.** The stationary density is computed so that it is non-negative *in floating point*
and accurate relative to each cell's own value, also where it is $10^{-30}$ of its peak or a
basin holds $10^{-10}$ of the mass. Pinning one cell and eliminating the rest by plain LU is
not: with two metastable basins $A$ has a second eigenvalue $\sim e^{-\Delta L/D}$, and an
elimination that sweeps uphill out of a basin without a pinned cell multiplies the rounding
error of each pivot (a difference $a_{jj} - \sum l_{jk}u_{kj}$) from cell to cell, until the
basin's total mass is noise and can come out negative. So: (1) every *sink* of the chain (a
cell all of whose jumps go against the drift: the local minima of the potential) is pinned;
(2) the other cells are eliminated by sparse LU (SuperLU, a geometric nested-dissection order,
no pivoting, stable for this column diagonally dominant M-matrix $M = -A_{ff}$), whose factors
then have non-positive off-diagonals and positive pivots, so every solve with a non-negative
right-hand side only adds; (3) the factorization is *certified*: $M^\top\mathbf 1$ is the
vector of rates into the pins, so solving $M^\top v = $ that vector must give $v = \mathbf 1$
to $10^{-8}$; where it does not, a trap without a pin was found, its lowest cell is pinned and
the elimination repeated; (4) with $h_k$ the solution for $p = 1$ on pin $k$ and 0 on the
others, the chain censored on the pins has rates $A_{jk} + \sum_l A_{jl}h_k[l] \ge 0$ (sums of
non-negative terms), whose stationary vector $c$ the GTH algorithm computes with small relative
error (Grassmann, Taksar & Heyman 1985; O'Cinneide 1993); (5) $p = \sum_k c_kh_k$, a sum of
non-negative terms. Against the exact discrete Gibbs law (isotropic noise), the relative error
is about $10^{-9}$ in every cell down to $10^{-290}$ of the peak (the part of $D$'s regularizing
floor). The other solves have the same trap and the same cure (``_eliminate``: sinks pinned,
certified no-pivot LU of the rest, then a small system on the pins whose pivots are formed
GTH-style, as sums of rates and leaks, by ``_gth_factor``):
:meth:`FokkerPlanck2D.mean_first_passage_time` (target absorbing; $\tau$ to ~1e-10 relative
up to $\tau\sim10^{17}$), backward Euler in :meth:`FokkerPlanck2D.propagate`, solved as
$(sI - A)p' = sp$ with $s = 1/dt$ so that the identity is never rounded away against $dt\,A$
(non-negative and mass-conserving to ~1e-13 per step for any ``dt``; ``expm_multiply`` is the
exact-in-time alternative), and the shift-invert resolvent of
:meth:`FokkerPlanck2D.relaxation_rates` (rates to ~1e-9 relative down to ~1e-13 of the
largest rate; below that the shift's round-off floor takes over, ~1e-6 relative at 1e-17).
Plain LU lost ~$e^{\Delta L/D}\times$round-off in all three: MFPT and slowest rates wrong
in every digit and backward-Euler densities negative at $\Delta L/D = 40$
(``tests/theory/test_fokker_planck_2d_mfpt.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from numpy.typing import NDArray
from scipy.optimize import minimize
from scipy.sparse.linalg import LinearOperator, SuperLU, eigs, expm_multiply, splu
from scipy.special import exprel

from sgdtemp.errors import UserError, require_positive
from sgdtemp.landscapes._base import AbstractLandscape
from sgdtemp.theory.lyapunov import lyapunov_continuous

__all__ = [
    "Grid2D",
    "FokkerPlanck2D",
    "Propagation",
    "Basin2D",
    "Stationary2D",
    "stationary_2d",
    "fokker_planck_from_landscape",
    "auto_domain",
    "shaped_grid",
    "selling_decomposition",
    "steepest_descent_basins",
    "effective_potential",
    "gibbs_density_2d",
    "MIN_GRID",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]
PointFn = Callable[[FloatArray], FloatArray]

MIN_GRID = 8  # fewest cells per axis
PSD_RTOL = 1e-10  # eigenvalues of D above -PSD_RTOL * max|D| count as >= 0
D_FLOOR = 1e-12  # D + D_FLOOR * max tr(D) * I: keeps D^{-1} finite where the noise is degenerate
MAX_WIDTH = 4  # widest Selling offset (cells) before a cell falls back to the limited stencil
SELLING_ITERS = 64
CERTIFY_RTOL = 1e-8  # stationary: largest |M^-T sigma - 1| accepted (see FokkerPlanck2D.stationary)
MAX_PIN_ROUNDS = 16  # stationary: traps pinned one by one at most this often
N_STD_DOMAIN = 8.0  # auto_domain: half-width in stationary standard deviations at each minimum
BOUNDARY_WEIGHT = 1e-12  # auto_domain: Gibbs weight allowed on the box edge


# ----------------------------------------------------------------------------- grid


@dataclass(frozen=True)
class Grid2D:
    """A uniform cell-centred grid on ``[xmin, xmax] x [ymin, ymax]`` with ``nx x ny`` cells.

    Arrays on the grid have shape ``(nx, ny)`` (``ij`` indexing: axis 0 is ``x``); the flat
    index of cell ``(i, j)`` is ``i * ny + j``.

    Raises:
        UserError: on an empty or non-finite domain, or fewer than ``MIN_GRID`` cells per axis.

    Example:
        >>> grid = Grid2D(-1.0, 1.0, 0.0, 4.0, 8, 8)
        >>> grid.x[:2], grid.hy
        (array([-0.875, -0.625]), 0.5)
    """

    xmin: float
    xmax: float
    ymin: float
    ymax: float
    nx: int
    ny: int

    def __post_init__(self) -> None:
        if not all(math.isfinite(v) for v in (self.xmin, self.xmax, self.ymin, self.ymax)):
            raise UserError("the grid's domain must be finite")
        if not (self.xmax > self.xmin and self.ymax > self.ymin):
            raise UserError(
                f"empty domain [{self.xmin}, {self.xmax}] x [{self.ymin}, {self.ymax}]; "
                "give xmin < xmax and ymin < ymax"
            )
        if min(self.nx, self.ny) < MIN_GRID:
            raise UserError(
                f"grid {self.nx} x {self.ny} is too small; use at least {MIN_GRID} cells per axis"
            )

    @property
    def hx(self) -> float:
        """Cell width in ``x``."""
        return (self.xmax - self.xmin) / self.nx

    @property
    def hy(self) -> float:
        """Cell width in ``y``."""
        return (self.ymax - self.ymin) / self.ny

    @property
    def cell_area(self) -> float:
        """``hx * hy``."""
        return self.hx * self.hy

    @property
    def x(self) -> FloatArray:
        """Cell centres in ``x``, ``(nx,)``."""
        return np.asarray(self.xmin + (np.arange(self.nx) + 0.5) * self.hx, dtype=np.float64)

    @property
    def y(self) -> FloatArray:
        """Cell centres in ``y``, ``(ny,)``."""
        return np.asarray(self.ymin + (np.arange(self.ny) + 0.5) * self.hy, dtype=np.float64)

    def points(self) -> FloatArray:
        """Cell centres, ``(nx, ny, 2)``."""
        xx, yy = np.meshgrid(self.x, self.y, indexing="ij")
        return np.stack([xx, yy], axis=-1)

    def cell_of(self, point: FloatArray) -> tuple[int, int] | None:
        """Index ``(i, j)`` of the cell containing ``point`` ``(2,)``, or None if outside."""
        i = math.floor((float(point[0]) - self.xmin) / self.hx)
        j = math.floor((float(point[1]) - self.ymin) / self.hy)
        if 0 <= i < self.nx and 0 <= j < self.ny:
            return i, j
        return None


# ----------------------------------------------------------------------------- building blocks


def _bernoulli(z: FloatArray) -> FloatArray:
    """$B(z) = z/(e^z - 1)$, positive, with $B(0) = 1$ and no overflow."""
    with np.errstate(over="ignore"):
        return 1.0 / exprel(z)


def _check_tensor(d: FloatArray, grid: Grid2D) -> None:
    """Raise :class:`UserError` unless ``d`` ``(nx, ny, 2, 2)`` is finite, symmetric and PSD."""
    if d.shape != (grid.nx, grid.ny, 2, 2):
        raise UserError(f"diffusion must have shape {(grid.nx, grid.ny, 2, 2)}, got {d.shape}")
    if not np.all(np.isfinite(d)):
        raise UserError("the diffusion tensor is not finite at some grid point")
    scale = float(np.abs(d).max()) or 1.0
    if np.abs(d[..., 0, 1] - d[..., 1, 0]).max() > 1e-10 * scale:
        raise UserError("the diffusion tensor is not symmetric")
    a, b, c = d[..., 0, 0], d[..., 0, 1], d[..., 1, 1]
    lam_min = 0.5 * (a + c) - np.sqrt(0.25 * (a - c) ** 2 + b**2)
    k = int(np.argmin(lam_min))
    if lam_min.flat[k] < -PSD_RTOL * scale:
        i, j = np.unravel_index(k, lam_min.shape)
        raise UserError(
            f"the diffusion tensor is not positive semi-definite at ({grid.x[i]:.4g}, "
            f"{grid.y[j]:.4g}) (smallest eigenvalue {lam_min.flat[k]:.3g}); check the noise model"
        )


def selling_decomposition(
    tensors: FloatArray, *, max_iter: int = SELLING_ITERS
) -> tuple[IntArray, FloatArray, NDArray[np.bool_]]:
    r"""Selling's decomposition $D = \sum_{i=1}^3 \rho_i f_if_i^\top$ of symmetric 2x2 tensors.

    $\rho_i \ge 0$ and the $f_i$ are integer vectors (Fehrenbach & Mirebeau 2014).

    Args:
        tensors: symmetric positive semi-definite matrices, ``(n, 2, 2)``.
        max_iter: iteration cap of Selling's algorithm.

    Returns:
        ``(offsets, weights, converged)``: ``(n, 3, 2)`` integer offsets, ``(n, 3)`` weights and
        ``(n,)`` flags (False where the cap was hit, e.g. for a singular tensor).

    Example:
        >>> offsets, weights, ok = selling_decomposition(np.array([[[2.0, 1.5], [1.5, 2.0]]]))
        >>> rebuilt = np.einsum("ni,nia,nib->nab", weights, offsets, offsets)
        >>> bool(np.allclose(rebuilt, [[2.0, 1.5], [1.5, 2.0]])), bool(ok[0])
        (True, True)
    """
    d = np.asarray(tensors, dtype=np.float64)
    n = d.shape[0]
    dxx, dxy, dyy = d[:, 0, 0], 0.5 * (d[:, 0, 1] + d[:, 1, 0]), d[:, 1, 1]
    # the superbase, as floats (small integers, exact); only the cells still moving are updated
    e = np.broadcast_to(np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]), (n, 3, 2)).copy()
    tol = 1e-13 * (dxx + dyy)
    pairs = ((0, 1, 2), (0, 2, 1), (1, 2, 0))

    def dots(ev: FloatArray, cells: IntArray | slice, i: int, j: int) -> FloatArray:
        """<e_i, D e_j> for the superbases ``ev`` of ``cells``."""
        ui, uj = ev[:, i], ev[:, j]
        return ui[:, 0] * (dxx[cells] * uj[:, 0] + dxy[cells] * uj[:, 1]) + ui[:, 1] * (
            dxy[cells] * uj[:, 0] + dyy[cells] * uj[:, 1]
        )

    moving = np.arange(n)
    converged = np.ones(n, dtype=bool)
    for _ in range(max_iter):
        ev = e[moving]
        pos = [dots(ev, moving, i, j) > tol[moving] for i, j, _ in pairs]
        act = pos[0] | pos[1] | pos[2]
        converged[moving] = ~act  # as of the start of this sweep (the last one counts)
        moving, ev, pos = moving[act], ev[act], [p[act] for p in pos]
        if moving.size == 0:
            break
        taken = np.zeros(moving.size, dtype=bool)
        for (i, j, k), mask in zip(pairs, pos):
            sel = mask & ~taken
            taken |= sel
            ei, ej = ev[sel, i].copy(), ev[sel, j].copy()
            ev[sel, i] = -ei
            ev[sel, k] = ei - ej
        e[moving] = ev
    every = slice(None)
    weights = np.stack(
        [np.maximum(-dots(e, every, i, j), 0.0) for i, j, _ in ((1, 2, 0), (0, 2, 1), (0, 1, 2))],
        1,
    )
    ints = np.rint(e).astype(np.int64)
    offsets = np.stack([-ints[..., 1], ints[..., 0]], axis=-1)  # f_i = e_i rotated by 90 degrees
    return offsets, weights, converged


def _gth_stationary(rates: FloatArray) -> FloatArray:
    r"""Stationary vector of a small generator by the GTH algorithm, ``(k, k) -> (k,)``.

    ``rates[j, l]`` ($j \ne l$) is the rate $l \to j$ (column convention, as $A$); the diagonal
    is ignored and taken as minus the column's off-diagonal sum. Grassmann, Taksar & Heyman
    (Oper. Res. 33, 1985) eliminate the last state first and form each pivot as a sum of
    rates, never a difference, so every entry of the result has a small *relative* error
    (O'Cinneide, Numer. Math. 65, 1993). State 0 is eliminated last: put the heaviest there.

    Raises:
        UserError: if a state cannot reach the states before it (the chain is reducible, in
            exact arithmetic or because its escape rates underflowed).
    """
    q = np.array(rates, dtype=np.float64).T  # q[i, j]: rate i -> j
    k = q.shape[0]
    for m in range(k - 1, 0, -1):
        out = q[m, :m].sum()
        if not out > 0:
            raise UserError(
                "the stationary chain is reducible in floating point: a basin's escape rate "
                "underflows to 0; raise the temperature or shrink the domain"
            )
        q[:m, m] /= out
        q[:m, :m] += np.outer(q[:m, m], q[m, :m])
    pi = np.zeros(k)
    pi[0] = 1.0
    for m in range(1, k):
        pi[m] = pi[:m] @ q[:m, m]
    return pi / pi.sum()


@dataclass(frozen=True)
class _GTHFactor:
    r"""LU factors of a small M-matrix $C = \operatorname{diag}(\mathbf 1^\top R + e) - R$.

    Built by :func:`_gth_factor`; ``rates`` holds the strict lower part $R_{im}/d_m$ of the unit
    lower factor (negated) and the strict upper part $R_{ml}$ of the upper one (negated), and
    ``pivots`` the $d_m > 0$.
    """

    rates: FloatArray
    pivots: FloatArray

    def solve(self, rhs: FloatArray, *, trans: bool = False) -> FloatArray:
        r"""$C^{-1}b$ (or $C^{-\top}b$) for ``rhs`` ``(k,)`` or ``(k, m)``.

        Only additions of non-negative terms when ``rhs >= 0``.
        """
        r, d = self.rates, self.pivots
        x = np.array(rhs, dtype=np.float64)
        k = d.size
        if not trans:  # L y = b (L_im = -r[i, m], i > m), then U x = y (U_ml = -r[m, l], l > m)
            for m in range(k):
                x[m + 1 :] += np.multiply.outer(r[m + 1 :, m], x[m])
            for m in range(k - 1, -1, -1):
                x[m] = (x[m] + r[m, m + 1 :] @ x[m + 1 :]) / d[m]
        else:  # U^T z = b, then L^T x = z
            for m in range(k):
                x[m] = (x[m] + r[:m, m] @ x[:m]) / d[m]
            for m in range(k - 1, -1, -1):
                x[m] += r[m + 1 :, m] @ x[m + 1 :]
        return x


def _gth_factor(rates: FloatArray, excess: FloatArray) -> _GTHFactor:
    r"""LU of $C = \operatorname{diag}(\mathbf 1^\top R + e) - R$ with GTH pivots, ``(k, k)``.

    ``rates[j, l]`` ($j \ne l$) is the rate $l \to j$, non-negative (the diagonal is ignored), and
    ``excess[l] >= 0`` the rate at which $l$ leaks out of the ``k`` states (absorption, or the
    shift $s$ of a resolvent), so $C$ is a column diagonally dominant M-matrix. As in
    :func:`_gth_stationary`, each pivot is formed as the sum of what leaves the state, never
    as a difference $C_{mm} - \sum\dots$, and the leaks are carried along
    ($e_l \mathrel{+}= R_{ml}e_m/d_m$), so every factor entry, and every solve with a
    non-negative right-hand side, has a small relative error, however tiny the leaks.

    Raises:
        UserError: if a pivot is zero (a state that cannot leak, not even through the others).
    """
    r = np.array(rates, dtype=np.float64)
    np.fill_diagonal(r, 0.0)
    e = np.array(excess, dtype=np.float64)
    k = e.size
    d = np.zeros(k)
    for m in range(k):
        d[m] = e[m] + r[m + 1 :, m].sum()
        if not d[m] > 0:
            raise UserError(
                "a state of the chain cannot reach the target (or its escape rate underflows "
                "to 0); check the target, raise the temperature or shrink the domain"
            )
        r[m + 1 :, m] /= d[m]
        low, up = r[m + 1 :, m], r[m, m + 1 :]
        e[m + 1 :] += up * (e[m] / d[m])
        r[m + 1 :, m + 1 :] += np.outer(low, up)
        np.fill_diagonal(r[m + 1 :, m + 1 :], 0.0)
    return _GTHFactor(rates=r, pivots=d)


def _limited_stencil(dp: FloatArray) -> tuple[IntArray, FloatArray]:
    """Seven-point stencil with the cross term limited to ``min(D'xx, D'yy)``, ``(n, 3, *)``."""
    n = dp.shape[0]
    cross = dp[:, 0, 1]
    rho_d = np.minimum(np.abs(cross), np.minimum(dp[:, 0, 0], dp[:, 1, 1]))
    offsets = np.zeros((n, 3, 2), dtype=np.int64)
    offsets[:, 0] = (1, 0)
    offsets[:, 1] = (0, 1)
    offsets[:, 2, 0] = 1
    offsets[:, 2, 1] = np.where(cross >= 0, 1, -1)
    weights = np.stack([dp[:, 0, 0] - rho_d, dp[:, 1, 1] - rho_d, rho_d], axis=1)
    return offsets, np.maximum(weights, 0.0)


def _nested_dissection(nx: int, ny: int, wx: int, wy: int, leaf: int = 16) -> IntArray:
    """Geometric nested-dissection order of the cells of an ``nx x ny`` grid.

    Separators are ``wx`` (``wy``) cells thick, the widest stencil reach, so the two halves of
    every split are not coupled directly; each block is cut where the separator has fewer cells
    (across ``x`` when ``wx * (its ny) <= wy * (its nx)``), and each separator is ordered after
    its halves.
    """
    idx = np.arange(nx * ny).reshape(nx, ny)
    order: list[IntArray] = []
    stack: list[tuple[int, int, int, int, bool]] = [(0, nx, 0, ny, False)]
    # iterative post-order: push (block, emitted=False); children before the separator
    while stack:
        i0, i1, j0, j1, done = stack.pop()
        if done:
            order.append(idx[i0:i1, j0:j1].ravel())
            continue
        di, dj = i1 - i0, j1 - j0
        can_i, can_j = di > 2 * wx + 1, dj > 2 * wy + 1
        if di * dj <= leaf:
            order.append(idx[i0:i1, j0:j1].ravel())
        elif can_i and (not can_j or wx * dj <= wy * di):  # the smaller separator
            m = (i0 + i1 - wx) // 2
            stack += [
                (m, m + wx, j0, j1, True),
                (m + wx, i1, j0, j1, False),
                (i0, m, j0, j1, False),
            ]
        elif can_j:
            m = (j0 + j1 - wy) // 2
            stack += [
                (i0, i1, m, m + wy, True),
                (i0, i1, m + wy, j1, False),
                (i0, i1, j0, m, False),
            ]
        else:
            order.append(idx[i0:i1, j0:j1].ravel())
    return np.concatenate(order)


@dataclass(frozen=True, eq=False)
class _Elimination:
    r"""A certified elimination of the free cells (see :meth:`FokkerPlanck2D._eliminate`).

    Attributes:
        order: the free cells, in elimination order, ``(f,)``.
        pins: the pinned cells, ``(k,)``.
        lu: SuperLU of $M = sI - A_{ff}$ in that order, without pivoting.
        into_pins: $A_{pf}$, sparse ``(k, f)``.
        from_pins: $A_{fp}$, dense ``(f, k)``.
        between: $A_{pp}$ without its diagonal, dense ``(k, k)``.
    """

    order: IntArray
    pins: IntArray
    lu: SuperLU
    into_pins: sp.csr_matrix
    from_pins: FloatArray
    between: FloatArray


@dataclass(frozen=True)
class Propagation:
    r"""Densities ``p(t)`` from :meth:`FokkerPlanck2D.propagate`.

    Attributes:
        times: the requested times, ``(K,)``.
        densities: the densities, ``(K, nx, ny)``.
        mass_error: $|\sum_k p_k h_xh_y - 1|$ at each time, ``(K,)``.
    """

    times: FloatArray
    densities: FloatArray
    mass_error: FloatArray


# ----------------------------------------------------------------------------- operator


class FokkerPlanck2D:
    r"""The discretized Fokker–Planck operator $\dot p = A p$ on a :class:`Grid2D`.

    Args:
        grid: the grid.
        diffusion: $D(\theta) = \tfrac T2 C(\theta)$ at points ``(..., 2) -> (..., 2, 2)``; must be
            symmetric positive semi-definite.
        drift: the drift $b(\theta)$ at points ``(..., 2) -> (..., 2)``.
        potential: optional $L$ at points ``(..., 2) -> (...)`` when $b = -\nabla L$; the drift
            along each jump is then the exact difference of $L$ (module docstring).
        max_width: widest stencil offset (cells) allowed before a cell's cross-diffusion is
            limited.

    Raises:
        UserError: if the diffusion tensor is not finite, symmetric and positive semi-definite
            on the grid, or the drift or potential is not finite.

    Example:
        >>> grid = Grid2D(-3.0, 3.0, -3.0, 3.0, 40, 40)
        >>> fp = FokkerPlanck2D(
        ...     grid,
        ...     lambda p: np.broadcast_to(0.5 * np.eye(2), p.shape + (2,)),
        ...     drift=lambda p: -p,
        ...     potential=lambda p: 0.5 * (p**2).sum(-1),
        ... )
        >>> p = fp.stationary()  # the Gibbs law exp(-L / D) = N(0, I / 2), exactly on the nodes
        >>> gibbs = fp.normalize(np.exp(-(grid.points() ** 2).sum(-1)))
        >>> bool(np.abs(p - gibbs).max() < 1e-9 * p.max()), fp.limited_cells
        (True, 0)
    """

    def __init__(
        self,
        grid: Grid2D,
        diffusion: PointFn,
        *,
        drift: PointFn,
        potential: PointFn | None = None,
        max_width: int = MAX_WIDTH,
    ) -> None:
        self.grid = grid
        nx, ny, hx, hy = grid.nx, grid.ny, grid.hx, grid.hy
        n = nx * ny
        pts = grid.points()
        d = np.array(diffusion(pts), dtype=np.float64)
        _check_tensor(d, grid)
        d = 0.5 * (d + np.swapaxes(d, -1, -2))
        self.diffusion = d
        b = np.asarray(drift(pts), dtype=np.float64)
        if b.shape != (nx, ny, 2) or not np.all(np.isfinite(b)):
            raise UserError(f"the drift must be finite with shape {(nx, ny, 2)} on the grid")
        self.potential: FloatArray | None = None
        if potential is not None:
            pot = np.asarray(potential(pts), dtype=np.float64)
            if pot.shape != (nx, ny) or not np.all(np.isfinite(pot)):
                raise UserError("the potential must be finite on the grid")
            self.potential = pot

        floor = D_FLOOR * max(float((d[..., 0, 0] + d[..., 1, 1]).max()), 1e-300)
        d_reg = (d + floor * np.eye(2)).reshape(n, 2, 2)
        scale = np.array([1.0 / hx, 1.0 / hy])
        dp = d_reg * scale[:, None] * scale[None, :]  # S D S, grid units
        offsets, weights, converged = selling_decomposition(dp)
        too_wide = ((np.abs(offsets).max(axis=-1) > max_width) & (weights > 0)).any(axis=-1)
        limited = ~converged | too_wide
        if limited.any():
            offsets[limited], weights[limited] = _limited_stencil(dp[limited])
        self.limited = limited.reshape(nx, ny)
        self.limited_cells = int(limited.sum())
        used = weights > 0
        width = [int(np.abs(offsets[..., a][used]).max()) if used.any() else 1 for a in (0, 1)]
        self.stencil_width: tuple[int, int] = (width[0], width[1])

        # directed jumps k -> l = k +- f with rate rho B(-z_kl), all six per cell at once
        ii, jj = np.divmod(np.arange(n), ny)
        both = np.concatenate([offsets, -offsets], axis=1)  # (n, 6, 2)
        ti, tj = ii[:, None] + both[..., 0], jj[:, None] + both[..., 1]
        ok = np.concatenate([used, used], axis=1) & (ti >= 0) & (ti < nx) & (tj >= 0) & (tj < ny)
        k, slot = np.nonzero(ok)
        dest = ti[ok] * ny + tj[ok]
        sx, sy = both[..., 0][ok] * hx, both[..., 1][ok] * hy
        dxx, dxy, dyy = d_reg[:, 0, 0], d_reg[:, 0, 1], d_reg[:, 1, 1]
        bx, by = b[..., 0].ravel(), b[..., 1].ravel()
        axx, axy, ayy = (0.5 * (v[k] + v[dest]) for v in (dxx, dxy, dyy))
        cx, cy = 0.5 * (bx[k] + bx[dest]), 0.5 * (by[k] + by[dest])
        if self.potential is not None:
            pot_flat = self.potential.ravel()
            along = -(pot_flat[dest] - pot_flat[k]) - (sx * cx + sy * cy)
            fix = along / (sx**2 + sy**2)
            cx, cy = cx + fix * sx, cy + fix * sy
        # limited cells: the drift must be exact for the tensor their stencil represents,
        # S^-1 (sum rho f f^T) S^-1 in physical units
        lim = limited[k]
        if lim.any():
            kl = k[lim]
            o, w = offsets[kl].astype(np.float64), weights[kl]
            axx[lim] = (w * o[..., 0] ** 2).sum(-1) * hx**2 + floor
            axy[lim] = (w * o[..., 0] * o[..., 1]).sum(-1) * hx * hy
            ayy[lim] = (w * o[..., 1] ** 2).sum(-1) * hy**2 + floor
            cx[lim], cy[lim] = bx[kl], by[kl]
        det = axx * ayy - axy**2
        z = (sx * (ayy * cx - axy * cy) + sy * (axx * cy - axy * cx)) / det
        self._src = k.astype(np.int64)
        self._dst = dest.astype(np.int64)
        self._rate = np.concatenate([weights, weights], axis=1)[ok] * _bernoulli(-z)
        self._fit = z  # > 0: the jump goes with the drift
        self._step = np.stack(
            [
                (self._dst // ny - self._src // ny) * hx,
                (self._dst % ny - self._src % ny) * hy,
            ],
            axis=-1,
        )
        out = np.bincount(self._src, weights=self._rate, minlength=n)
        self._out = out
        self.operator = sp.csr_matrix(
            (
                np.concatenate([self._rate, -out]),
                (
                    np.concatenate([self._dst, np.arange(n)]),
                    np.concatenate([self._src, np.arange(n)]),
                ),
            ),
            shape=(n, n),
        )

    # -- linear algebra
    def _order(self) -> IntArray:
        wx, wy = self.stencil_width
        return _nested_dissection(self.grid.nx, self.grid.ny, max(wx, 1), max(wy, 1))

    @staticmethod
    def _splu(permuted: sp.csc_matrix) -> SuperLU:
        """SuperLU of an already ordered matrix, in that order and without pivoting."""
        return splu(
            permuted, permc_spec="NATURAL", diag_pivot_thresh=0.0, options={"SymmetricMode": True}
        )

    def _eliminate(
        self, pins: IntArray, *, shift: float = 0.0, absorbing: NDArray[np.bool_] | None = None
    ) -> _Elimination:
        r"""Certified elimination of every cell but ``pins`` and ``absorbing`` from $sI - A$.

        ``absorbing`` cells ``(n,)`` are removed (their rows and columns dropped; jumps into them
        stay in the diagonal). The rest, $M = sI - A_{ff}$, is a column diagonally dominant
        M-matrix whose column sums $M^\top\mathbf 1$ are $s$ plus the rates out of the free set.
        It is factorized without pivoting and certified: $M^\top v = M^\top\mathbf 1$ must
        return $v = \mathbf 1$ to ``CERTIFY_RTOL``; where it does not, a trap without a pin was
        found (an elimination sweeping uphill out of it loses its tiny escape rate), its bottom
        is pinned and the elimination repeated (module docstring, "Solvers").
        """
        n = self.grid.nx * self.grid.ny
        base = self._order()
        blocked = np.zeros(n, dtype=bool) if absorbing is None else absorbing.copy()
        pins = pins[~blocked[pins]]
        for _ in range(MAX_PIN_ROUNDS):
            free = ~blocked
            free[pins] = False
            order = base[free[base]]
            m, into_pins, from_pins, between = self._blocks(order, pins, shift)
            lu = self._splu(m)
            if not np.array_equal(lu.perm_r, np.arange(order.size)):  # pragma: no cover
                raise RuntimeError("SuperLU pivoted on an M-matrix")
            at_f = np.full(n, -1, dtype=np.int64)
            at_f[order] = np.arange(order.size)
            leaves = (at_f[self._src] >= 0) & (at_f[self._dst] < 0)
            enters = (at_f[self._dst] >= 0) & (at_f[self._src] < 0)
            escape = np.bincount(at_f[self._src[leaves]], self._rate[leaves], order.size)
            check = lu.solve(shift + escape, trans="T")
            bad = ~(np.abs(check - 1.0) <= CERTIFY_RTOL)
            if not bad.any():
                return _Elimination(order, pins, lu, into_pins, from_pins, between)
            inflow: FloatArray = np.asarray(
                np.bincount(at_f[self._dst[enters]], self._rate[enters], order.size), np.float64
            )
            pins = np.append(pins, self._trap_cell(order, bad, lu, inflow))
        raise RuntimeError(  # pragma: no cover - not reached on any chain tried
            f"no certified elimination after {MAX_PIN_ROUNDS} pinned traps"
        )

    def _resolvent(self, shift: float) -> Callable[[FloatArray], FloatArray]:
        r"""Solver of $(sI - A)x = b$, $s > 0$, for ``b`` ``(n,)`` in flat cell order.

        Block elimination on the certified free cells (:meth:`_eliminate`, the sinks pinned),
        then the small system on the pins, $C x_p = b_p + A_{pf}M^{-1}b_f$ with
        $C = sI - A_{pp} - A_{pf}X$, $X = M^{-1}A_{fp} \ge 0$. $C$'s diagonal is never formed as
        $s + \text{out} - \text{returns}$: its column sums are $s(1 + \mathbf 1^\top X)$, so
        :func:`_gth_factor` builds the pivots from those and the off-diagonal rates. With
        ``b >= 0`` every step adds non-negative terms; for any ``b`` the error is componentwise
        a small multiple of round-off times $(sI - A)^{-1}|b|$.
        """
        n = self.grid.nx * self.grid.ny
        el = self._eliminate(self._initial_pins(), shift=shift)
        x_pins = el.lu.solve(el.from_pins)  # (f, k)
        coupled = el.between + np.asarray(el.into_pins @ x_pins)
        small = _gth_factor(coupled, shift * (1.0 + x_pins.sum(axis=0)))

        def solve(b: FloatArray) -> FloatArray:
            b = np.asarray(b, dtype=np.float64)
            y = el.lu.solve(b[el.order])
            xp = small.solve(b[el.pins] + el.into_pins @ y)
            x = np.empty(n)
            x[el.order] = y + x_pins @ xp
            x[el.pins] = xp
            return x

        return solve

    # -- public API
    @property
    def positivity_guaranteed(self) -> bool:
        """Always True: every jump rate is non-negative by construction (module docstring)."""
        return bool((self._rate >= 0).all())

    def normalize(self, p: FloatArray) -> FloatArray:
        r"""``p`` ``(nx, ny)`` scaled so that $\sum_k p_k h_xh_y = 1$."""
        p = np.asarray(p, dtype=np.float64)
        return p / (p.sum() * self.grid.cell_area)

    def stationary(self) -> FloatArray:
        r"""Stationary density, normalized to $\sum_k p_k h_xh_y = 1$, ``(nx, ny)``.

        Non-negative in floating point, and accurate relative to each cell's own value also
        where the density is $10^{-30}$ of its peak or a basin holds $10^{-10}$ of the mass (module
        docstring, "Solvers").

        Raises:
            UserError: if the chain is reducible in floating point (a basin whose escape rate
                underflows to 0: raise the temperature or shrink the domain).
        """
        nx, ny = self.grid.nx, self.grid.ny
        n = nx * ny
        el = self._eliminate(self._initial_pins())
        order, pins, lu = el.order, el.pins, el.lu
        into_pins, from_pins, between = el.into_pins, el.from_pins, el.between
        # h_k: stationary on the free cells given p = 1 on pin k and 0 on the others
        harmonic = lu.solve(from_pins)
        # the chain censored on the pins: rate k -> j = A[j, k] + sum_l A[j, l] h_k[l], all >= 0
        censored = np.asarray(into_pins @ harmonic) + between
        c = _gth_stationary(censored)
        p = np.zeros(n)
        p[order] = harmonic @ c
        p[pins] = c
        return self.normalize(p.reshape(nx, ny))

    def _initial_pins(self) -> IntArray:
        """The sinks of the chain (every jump out goes against the drift), deepest first.

        These are the grid's local minima of the potential, where there is one, in the
        stencil's sense; the centre cell if there is no sink (e.g. pure diffusion).
        """
        nx, ny = self.grid.nx, self.grid.ny
        n = nx * ny
        uphill = np.bincount(self._src, weights=(self._fit > 0).astype(np.float64), minlength=n)
        down = np.bincount(self._src, weights=(self._fit < 0).astype(np.float64), minlength=n)
        cells = np.flatnonzero((uphill == 0) & (down > 0))
        if cells.size == 0:
            return np.array([(nx // 2) * ny + ny // 2], dtype=np.int64)
        if self.potential is not None:
            cells = cells[np.argsort(self.potential.ravel()[cells], kind="stable")]
        return cells.astype(np.int64)

    def _blocks(
        self, order: IntArray, pins: IntArray, shift: float = 0.0
    ) -> tuple[sp.csc_matrix, sp.csr_matrix, FloatArray, FloatArray]:
        """Blocks of $A$ for free cells ``order`` (in that order) and ``pins``, from the jumps.

        Returns ``(M, into_pins, from_pins, between)``: $M = sI - A_{ff}$ (CSC), $A_{pf}$
        (sparse), $A_{fp}$ (dense) and $A_{pp}$ without its diagonal (dense).
        """
        n = self.grid.nx * self.grid.ny
        f, k = order.size, pins.size
        at_f = np.full(n, -1, dtype=np.int64)
        at_f[order] = np.arange(f)
        at_p = np.full(n, -1, dtype=np.int64)
        at_p[pins] = np.arange(k)
        row_f, col_f = at_f[self._dst], at_f[self._src]  # A[dst, src] = rate of src -> dst
        row_p, col_p = at_p[self._dst], at_p[self._src]
        ff = (row_f >= 0) & (col_f >= 0)
        diag = np.arange(f)
        m = sp.csc_matrix(
            (
                np.concatenate([-self._rate[ff], self._out[order] + shift]),
                (np.concatenate([row_f[ff], diag]), np.concatenate([col_f[ff], diag])),
            ),
            shape=(f, f),
        )
        pf = (row_p >= 0) & (col_f >= 0)
        into_pins = sp.csr_matrix((self._rate[pf], (row_p[pf], col_f[pf])), shape=(k, f))
        fp = (row_f >= 0) & (col_p >= 0)
        from_pins = np.zeros((f, k))
        np.add.at(from_pins, (row_f[fp], col_p[fp]), self._rate[fp])
        pp = (row_p >= 0) & (col_p >= 0)
        between = np.zeros((k, k))
        np.add.at(between, (row_p[pp], col_p[pp]), self._rate[pp])
        return m, into_pins, from_pins, between

    def _trap_cell(
        self, order: IntArray, bad: NDArray[np.bool_], lu: SuperLU, inflow: FloatArray
    ) -> int:
        """The bottom of the deepest uncertified trap, a free cell ``order[bad]``.

        The one of lowest potential or, without a potential, of the largest (mis-scaled but
        well-shaped) density fed by ``inflow`` (the rates into each free cell from the others).
        """
        where = np.flatnonzero(bad)
        if self.potential is not None:
            return int(order[where[np.argmin(self.potential.ravel()[order[where]])]])
        h = np.abs(lu.solve(inflow))
        return int(order[where[np.argmax(h[where])]])

    def residual(self, p: FloatArray) -> float:
        r"""Relative stationarity residual $\|Ap\|_1 / (\max_k|A_{kk}|\,\|p\|_1)$."""
        v = np.asarray(p, dtype=np.float64).ravel()
        scale = float(np.abs(self.operator.diagonal()).max()) * float(np.abs(v).sum())
        return float(np.abs(self.operator @ v).sum()) / scale

    def mass_error(self, p: FloatArray) -> float:
        r"""$|\sum_k p_k h_xh_y - 1|$."""
        return abs(float(np.asarray(p).sum()) * self.grid.cell_area - 1.0)

    def current(self, p: FloatArray) -> FloatArray:
        r"""Probability current $J$ at the cell centres, ``(nx, ny, 2)``.

        Each jump $k\to l$ carries the flow $Q_{kl}p_k$ along $s = \theta_l - \theta_k$; the current
        at a cell is half the sum of $Q_{kl}p_k\,s$ over the jumps that start or end there, which
        reproduces a constant current exactly and vanishes identically under detailed balance.
        """
        nx, ny = self.grid.nx, self.grid.ny
        flow = (self._rate * np.asarray(p, dtype=np.float64).ravel()[self._src])[:, None]
        contrib = 0.5 * flow * self._step
        j = np.zeros((nx * ny, 2))
        for axis in (0, 1):
            j[:, axis] = np.bincount(self._src, weights=contrib[:, axis], minlength=nx * ny)
            j[:, axis] += np.bincount(self._dst, weights=contrib[:, axis], minlength=nx * ny)
        return j.reshape(nx, ny, 2)

    def propagate(
        self, p0: FloatArray, times: FloatArray, *, dt: float | None = None
    ) -> Propagation:
        r"""Evolve the density ``p0`` ``(nx, ny)`` to each of ``times``.

        Args:
            p0: initial density (normalized here), ``(nx, ny)``, non-negative.
            times: output times, ``(K,)``, non-negative and non-decreasing.
            dt: if given, backward Euler with this step (first order in ``dt``; each time is hit
                exactly by a shortened last step), solved as $(sI - A)p' = sp$, $s = 1/dt$, by
                :meth:`_resolvent`: non-negative and mass-conserving in floating point for any
                ``dt`` (``dt -> inf`` gives :meth:`stationary`), with every basin's mass
                accurate relative to itself; if None, ``expm_multiply`` (exact in time; its cost
                grows with $\|A\|\,t$).

        Returns:
            The :class:`Propagation`.

        Raises:
            UserError: on malformed times, a non-positive ``dt`` or a bad ``p0``.
        """
        nx, ny = self.grid.nx, self.grid.ny
        p = np.asarray(p0, dtype=np.float64)
        if p.shape != (nx, ny) or not np.all(np.isfinite(p)) or p.min() < 0 or p.sum() <= 0:
            raise UserError(
                f"p0 must be a finite, non-negative, non-zero array of shape {(nx, ny)}"
            )
        ts = np.atleast_1d(np.asarray(times, dtype=np.float64))
        if ts.ndim != 1 or np.any(ts < 0) or np.any(np.diff(ts) < 0):
            raise UserError("times must be non-negative and non-decreasing")
        v = self.normalize(p).ravel()
        out = np.empty((ts.size, nx * ny))
        a = self.operator.tocsc()
        t_now = 0.0
        if dt is None:
            for k, t in enumerate(ts):
                if t > t_now:
                    v = expm_multiply(a * (t - t_now), v)
                    t_now = float(t)
                out[k] = v
        else:
            require_positive("dt", dt)

            def stepper(h: float) -> Callable[[FloatArray], FloatArray]:
                # (I - hA) v' = v as (sI - A) v' = s v, s = 1/h: the identity is never rounded
                # away against h * A, and the solve only adds non-negative terms
                solve = self._resolvent(1.0 / h)
                return lambda u: solve(u / h)

            full = stepper(dt)
            for k, t in enumerate(ts):
                while t - t_now > dt * (1 + 1e-12):
                    v, t_now = full(v), t_now + dt
                if t > t_now:
                    v, t_now = stepper(t - t_now)(v), float(t)
                out[k] = v
        dens = out.reshape(ts.size, nx, ny)
        mass = np.abs(dens.sum(axis=(1, 2)) * self.grid.cell_area - 1.0)
        return Propagation(times=ts, densities=dens, mass_error=mass)

    def mean_first_passage_time(self, target: NDArray[np.bool_]) -> FloatArray:
        r"""Exact mean first-passage time of the discretized process into ``target``, ``(nx, ny)``.

        Solves $Q\tau = -\mathbf 1$ off the target with $\tau = 0$ on it ($Q = A^\top$, the
        generator): the oracle for simulated first-passage times of the SDE, in SDE time. Off
        the target, $-Q$ is an M-matrix and $\tau > 0$, but a plain elimination of it loses the
        tiny escape rate of every basin without target cells (module docstring, "Solvers"), so
        $\tau \sim e^{\Delta L/D}$ comes out with a relative error growing like $e^{\Delta L/D}$
        times round-off. Instead the sinks off the target are pinned (:meth:`_eliminate`, with the
        target absorbing); on the free cells $\tau_f = u + H\tau_p$ with $u = M^{-\top}\mathbf 1$
        (time spent there before hitting a pin or the target) and $H = M^{-\top}A_{pf}^\top$
        (which pin is hit first); the pins then obey the censored chain's equations
        $(r_i + \sum_{j\ne i}S_{ij})\tau_i - \sum_{j\ne i}S_{ij}\tau_j = 1 + (A_{fp}^\top u)_i$,
        with $S = A_{fp}^\top H + A_{pp}^\top$ and $r$ the rates into the target (direct plus via
        the free cells), all sums of non-negative terms, solved by :func:`_gth_factor`. Every
        entry of $\tau$ has a small relative error (~1e-12, checked against the exact birth–death
        formula up to $\tau\sim10^{17}$ in ``tests/theory/test_fokker_planck_2d_mfpt.py``).

        Args:
            target: cells of the target set, ``(nx, ny)`` bool, at least one.

        Returns:
            $\tau$, ``(nx, ny)``, 0 on the target and positive elsewhere.

        Raises:
            UserError: if ``target`` has the wrong shape or is empty or everything, or some cells
                cannot reach it (or only with an escape rate that underflows to 0).
        """
        nx, ny = self.grid.nx, self.grid.ny
        n = nx * ny
        mask = np.asarray(target, dtype=bool)
        if mask.shape != (nx, ny) or not mask.any() or mask.all():
            raise UserError(f"target must be a (nx, ny) = {(nx, ny)} mask with some cells, not all")
        hit = mask.ravel()
        el = self._eliminate(self._initial_pins(), absorbing=hit)
        order, pins, lu = el.order, el.pins, el.lu
        f, k = order.size, pins.size
        at_f = np.full(n, -1, dtype=np.int64)
        at_f[order] = np.arange(f)
        at_p = np.full(n, -1, dtype=np.int64)
        at_p[pins] = np.arange(k)
        into = hit[self._dst]  # jumps into the target
        from_f, from_p = into & (at_f[self._src] >= 0), into & (at_p[self._src] >= 0)
        f_to_target = np.bincount(at_f[self._src[from_f]], self._rate[from_f], f)
        p_to_target = np.bincount(at_p[self._src[from_p]], self._rate[from_p], k)
        tau = np.zeros(n)
        u = lu.solve(np.ones(f), trans="T")
        if k == 0:
            tau[order] = u
            return tau.reshape(nx, ny)
        hits = lu.solve(np.asarray(el.into_pins.T.toarray()), trans="T")  # (f, k)
        q_pf = el.from_pins.T  # rate pin -> free cell
        censored = q_pf @ hits + el.between.T  # censored[i, j]: rate pin i -> pin j
        leak = q_pf @ lu.solve(f_to_target, trans="T") + p_to_target
        # the pins' equations are the transpose of the column form that _gth_factor takes
        small = _gth_factor(censored.T, leak)
        tau_p = small.solve(1.0 + q_pf @ u, trans=True)
        tau[order] = u + hits @ tau_p
        tau[pins] = tau_p
        return tau.reshape(nx, ny)

    def relaxation_rates(self, k: int = 1) -> NDArray[np.complex128]:
        r"""The ``k`` slowest relaxation rates $-\lambda$, $\lambda \ne 0$ eigenvalues of $A$.

        Sorted by real part (complex where the dynamics is not reversible), ``(k,)``. For two
        metastable basins A and B the slowest rate is $k_{A\to B} + k_{B\to A}$.

        Shift-invert about $s = 10^{-9}\max|A_{kk}|$ with the certified resolvent
        (:meth:`_resolvent`): a rate $\lambda \ll s$ has an absolute error of a few hundred
        round-offs times $s$ (relative ~1e-9 at $\lambda \sim 10^{-13}\max|A_{kk}|$, ~1e-6 at
        $10^{-17}$); a plain LU of $A - sI$ lost every digit there.

        Raises:
            UserError: if ``k < 1``.
        """
        if k < 1:
            raise UserError(f"k must be at least 1, got {k}")
        n = self.grid.nx * self.grid.ny
        a = self.operator
        shift = 1e-9 * float(np.abs(a.diagonal()).max())
        resolvent = self._resolvent(shift)  # (sI - A)^-1, accurate on the slow modes
        op = LinearOperator((n, n), matvec=lambda u: -resolvent(np.asarray(u).ravel()))
        vals = eigs(a, k=k + 1, sigma=shift, OPinv=op, which="LM", return_eigenvectors=False)
        vals = vals[np.argsort(np.abs(vals))][1:]  # drop the stationary eigenvalue 0
        return np.asarray(-vals[np.argsort(-vals.real)], dtype=np.complex128)


# ----------------------------------------------------------------------------- landscapes


def _on_points(fn: Callable[[torch.Tensor], torch.Tensor]) -> PointFn:
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
    cov, grad = _on_points(landscape.noise_cov), _on_points(landscape.grad)
    return FokkerPlanck2D(
        grid,
        lambda pts: 0.5 * temperature * cov(pts),
        drift=lambda pts: -grad(pts),
        potential=_on_points(landscape.loss),
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
    loss = _on_points(landscape.loss)
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


# ----------------------------------------------------------------------------- analysis


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
    loss, grad = _on_points(landscape.loss), _on_points(landscape.grad)
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
    """

    location: FloatArray
    probability: float
    gibbs_probability: float
    loss: float
    hessian_eigenvalues: FloatArray
    exact: bool


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
        limited_cells: cells whose cross-diffusion had to be limited (module docstring).
        limited_mass: stationary mass in those cells (where the scheme is inconsistent).
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
    stencil_width: tuple[int, int]
    boundary_mass: float
    labels: IntArray
    basins: tuple[Basin2D, ...]
    gibbs_density: FloatArray
    gibbs_noise: float


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


def stationary_2d(
    landscape: AbstractLandscape,
    temperature: float,
    *,
    grid: int | Grid2D = 200,
    domain: tuple[float, float, float, float] | None = None,
) -> Stationary2D:
    r"""Stationary law of $d\theta = -\nabla L\,dt + \sqrt{T\,C(\theta)}\,dW$ for a 2-D landscape.

    Solves the Fokker–Planck equation (module docstring) on a grid, assigns every cell to a
    basin by discrete steepest descent on $L$, and compares with the Gibbs law in $L$.

    Args:
        landscape: a 2-D landscape; ``noise_cov`` gives $C(\theta)$.
        temperature: $T = \eta/B > 0$.
        grid: ``n`` for about ``n * n`` cells shaped by :func:`shaped_grid`, or a ready
            :class:`Grid2D` (then ``domain`` is ignored).
        domain: ``(xmin, xmax, ymin, ymax)``; default :func:`auto_domain`.

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
    deepest = int(np.argmin(_on_points(landscape.loss)(mins)))
    gibbs_noise = float(np.trace(c_min[deepest])) / 2.0
    gibbs = gibbs_density_2d(loss, 0.5 * temperature * gibbs_noise, g.cell_area)

    area = g.cell_area
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
            )
        )

    current = fp.current(p)
    grad = _on_points(landscape.grad)(g.points())
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
        stencil_width=fp.stencil_width,
        boundary_mass=float(np.abs(p[ring]).sum() * area),
        labels=labels,
        basins=tuple(basins),
        gibbs_density=gibbs,
        gibbs_noise=gibbs_noise,
    )
