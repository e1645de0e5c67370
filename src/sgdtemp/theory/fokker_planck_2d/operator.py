r"""The discretized Fokker–Planck operator $\dot p = Ap$ on the cells, and its solves.

$A = Q^\top$ with $Q$ the generator of the chain of :mod:`.jumps` (columns of $A$ sum to zero:
mass is conserved exactly). The stationary density, backward-Euler steps, first-passage times and
the resolvent are computed so that they are non-negative *in floating point* and accurate relative
to each cell's own value (package docstring, "Solvers"), through :meth:`FokkerPlanck2D._eliminate`:
the sinks of the chain pinned, a certified no-pivot LU of the rest, and a small GTH-style system
on the pins (:mod:`.linalg`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from scipy.sparse.linalg import LinearOperator, SuperLU, eigs, expm_multiply, splu

from sgdtemp.errors import UserError, require_positive
from sgdtemp.theory.fokker_planck_2d.grid import FloatArray, Grid2D, IntArray, PointFn
from sgdtemp.theory.fokker_planck_2d.jumps import build_jumps
from sgdtemp.theory.fokker_planck_2d.linalg import (
    _Elimination,
    _gth_factor,
    _gth_stationary,
    _nested_dissection,
)
from sgdtemp.theory.fokker_planck_2d.stencils import MAX_WIDTH, _check_tensor

__all__ = ["FokkerPlanck2D", "Propagation"]

CERTIFY_RTOL = 1e-8  # stationary: largest |M^-T sigma - 1| accepted (see FokkerPlanck2D.stationary)
MAX_PIN_ROUNDS = 16  # stationary: traps pinned one by one at most this often


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
        walls: ``"no-flux"`` (jumps out of the box dropped: the SDE reflected along the conormal
            $Dn$) or ``"projected"`` (sent to the nearest cell inside: reflected along the
            normal); see :mod:`.jumps`.

    Raises:
        UserError: if the diffusion tensor is not finite, symmetric and positive semi-definite
            on the grid, the drift or potential is not finite, or ``walls`` is unknown.

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
        walls: str = "no-flux",
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
        self.drift = b
        self.potential: FloatArray | None = None
        if potential is not None:
            pot = np.asarray(potential(pts), dtype=np.float64)
            if pot.shape != (nx, ny) or not np.all(np.isfinite(pot)):
                raise UserError("the potential must be finite on the grid")
            self.potential = pot
        self.walls = walls
        jumps = build_jumps(grid, d, b, self.potential, max_width=max_width, walls=walls)
        self.limited = jumps.limited
        self.limited_cells = int(jumps.limited.sum())
        self.stencil_width = jumps.stencil_width
        self.wall_rate = jumps.wall_rate
        self._src, self._dst, self._rate, self._fit = jumps.src, jumps.dst, jumps.rate, jumps.fit
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
