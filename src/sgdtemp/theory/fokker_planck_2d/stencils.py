r"""Selling's non-negative stencils for an anisotropic diffusion tensor, and their fallback.

In grid units ($u = x/h_x$, $v = y/h_y$) the tensor is $D' = S D S$, $S = \operatorname{diag}(1/h_x,
1/h_y)$. Selling's algorithm turns the superbase $((1,0),(0,1),(-1,-1))$ into a $D'$-obtuse one
$(e_1, e_2, e_3)$, and then $D' = \sum_i \rho_i\, f_if_i^\top$ with
$\rho_i = -\langle e_j, D'e_k\rangle \ge 0$ and $f_i = e_i^\perp$ integer offsets (Fehrenbach &
Mirebeau, "Sparse non-negative stencils for anisotropic diffusion", J. Math. Imaging Vis. 49,
2014): non-negative weights for every positive semi-definite $D$, the five-point stencil for
diagonal $D$, Kushner's seven-point one when $|D'_{xy}| \le \min(D'_{xx}, D'_{yy})$, wider
offsets (like $(2, 1)$) for stronger anisotropy relative to the cell aspect ratio. Where the
offsets would exceed ``max_width`` cells (or the algorithm does not converge, $D$ nearly
singular), a cell falls back to the seven-point stencil with its cross term *limited* to
$\min(D'_{xx}, D'_{yy})$: still positive, but the wrong tensor there.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from sgdtemp.errors import UserError
from sgdtemp.theory.fokker_planck_2d.grid import FloatArray, Grid2D, IntArray

__all__ = ["selling_decomposition", "MAX_WIDTH"]

PSD_RTOL = 1e-10  # eigenvalues of D above -PSD_RTOL * max|D| count as >= 0
MAX_WIDTH = 4  # widest Selling offset (cells) before a cell falls back to the limited stencil
SELLING_ITERS = 64


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
