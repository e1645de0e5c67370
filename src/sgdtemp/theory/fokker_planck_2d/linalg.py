r"""Sparse solves of the chain's M-matrices that keep tiny probabilities accurate: GTH and order.

GTH (Grassmann, Taksar & Heyman 1985) eliminates states forming every pivot as a sum of rates,
never a difference, so small stationary weights keep a small *relative* error (O'Cinneide 1993);
the large grid is eliminated in a geometric nested-dissection order (SuperLU, no pivoting) and the
small system left on the pinned cells is solved GTH-style (see :mod:`.operator`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import SuperLU

from sgdtemp.errors import UserError
from sgdtemp.theory.fokker_planck_2d.grid import FloatArray, IntArray

__all__: list[str] = []


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
