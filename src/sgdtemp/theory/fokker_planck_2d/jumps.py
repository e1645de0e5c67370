r"""The jump rates of the chain on the cells: Selling stencils, exponentially fitted drift, walls.

Each cell $k$ jumps to $k \pm f_i$ (its Selling offsets, :mod:`.stencils`) at rate
$\rho_i\,B(-z_{kl})$ with $B(z) = z/(e^z - 1) > 0$ and $z_{kl} = s^\top\bar D^{-1}\bar b = -z_{lk}$,
$s = \theta_l - \theta_k$, bars denoting the mean of the two cells. Since $B(-z) - B(z) = z$, the
first moment of the jumps is $\sum_i\rho_i z_i f_i = S^{-1}b$: the drift is exact for any Péclet
number, with positive rates (a Scharfetter–Gummel flux per edge). With a potential,
$s\cdot\bar b$ is replaced by the difference $-(L_l - L_k)$, so for constant isotropic $D$ the
chain satisfies detailed balance *exactly* with $p_k \propto e^{-L_k/D}$.

**Walls.** A jump that would leave the box is either dropped (``"no-flux"``, the default: no
probability crosses the walls, the natural boundary condition of the Fokker–Planck equation, which
is the SDE *reflected along the conormal* $Dn$) or sent to the nearest cell inside
(``"projected"``: the SDE projected back onto the box along the wall's normal, i.e. reflected
*normally*). Both keep every rate non-negative and the mass exact. Where the walls hold no
probability flux they give the same law; where they differ, the law depends on the walls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.special import exprel

from sgdtemp.errors import UserError
from sgdtemp.theory.fokker_planck_2d.grid import FloatArray, Grid2D, IntArray
from sgdtemp.theory.fokker_planck_2d.stencils import _limited_stencil, selling_decomposition

__all__ = ["WALLS", "Jumps", "build_jumps"]

WALLS = ("no-flux", "projected")
# D + D_FLOOR * tr(D) * I in each cell: keeps D^{-1} finite where the noise is degenerate. Relative
# to the cell's own tensor: a floor relative to the largest tensor on the grid would add, far out
# where the noise grows fast, an isotropic diffusion comparable to the one near the minima.
D_FLOOR = 1e-12


def _bernoulli(z: FloatArray) -> FloatArray:
    """$B(z) = z/(e^z - 1)$, positive, with $B(0) = 1$ and no overflow."""
    with np.errstate(over="ignore"):
        return 1.0 / exprel(z)


@dataclass(frozen=True, eq=False)
class Jumps:
    r"""The chain's directed jumps ``src -> dst`` with their rates (flat cell indices).

    Attributes:
        src: source cells, ``(m,)``.
        dst: target cells, ``(m,)``.
        rate: jump rates, non-negative, ``(m,)``.
        fit: $z$ of each jump, ``(m,)``; $> 0$ when the jump goes with the drift.
        limited: cells whose cross-diffusion was limited, ``(nx, ny)``.
        stencil_width: widest jump in cells, ``(x, y)``.
        wall_rate: per cell, the summed rate of its jumps that hit a wall (dropped under
            ``"no-flux"``, redirected under ``"projected"``), ``(nx, ny)``.
    """

    src: IntArray
    dst: IntArray
    rate: FloatArray
    fit: FloatArray
    limited: NDArray[np.bool_]
    stencil_width: tuple[int, int]
    wall_rate: FloatArray


def build_jumps(
    grid: Grid2D,
    d: FloatArray,
    b: FloatArray,
    potential: FloatArray | None,
    *,
    max_width: int,
    walls: str = "no-flux",
) -> Jumps:
    r"""The jumps for diffusion ``d`` ``(nx, ny, 2, 2)`` and drift ``b`` ``(nx, ny, 2)``.

    Args:
        grid: the grid.
        d: symmetric positive semi-definite diffusion tensors on the cells.
        b: drift on the cells.
        potential: $L$ on the cells ``(nx, ny)`` when $b = -\nabla L$, else None.
        max_width: widest Selling offset (cells) before a cell's cross-diffusion is limited.
        walls: ``"no-flux"`` or ``"projected"`` (module docstring).

    Returns:
        The :class:`Jumps`.

    Raises:
        UserError: on an unknown ``walls``.
    """
    if walls not in WALLS:
        raise UserError(f"unknown walls {walls!r}; choose one of {', '.join(WALLS)}")
    nx, ny, hx, hy = grid.nx, grid.ny, grid.hx, grid.hy
    n = nx * ny
    trace = (d[..., 0, 0] + d[..., 1, 1]).reshape(n)
    floor = D_FLOOR * np.maximum(trace, 1e-300)  # (n,)
    d_reg = d.reshape(n, 2, 2) + floor[:, None, None] * np.eye(2)
    scale = np.array([1.0 / hx, 1.0 / hy])
    dp = d_reg * scale[:, None] * scale[None, :]  # S D S, grid units
    offsets, weights, converged = selling_decomposition(dp)
    too_wide = ((np.abs(offsets).max(axis=-1) > max_width) & (weights > 0)).any(axis=-1)
    limited = ~converged | too_wide
    if limited.any():
        offsets[limited], weights[limited] = _limited_stencil(dp[limited])
    used = weights > 0
    width = [int(np.abs(offsets[..., a][used]).max()) if used.any() else 1 for a in (0, 1)]

    # directed jumps k -> l = k +- f with rate rho B(-z_kl), all six per cell at once
    ii, jj = np.divmod(np.arange(n), ny)
    both = np.concatenate([offsets, -offsets], axis=1)  # (n, 6, 2)
    ti, tj = ii[:, None] + both[..., 0], jj[:, None] + both[..., 1]
    live = np.concatenate([used, used], axis=1)
    inside = (ti >= 0) & (ti < nx) & (tj >= 0) & (tj < ny)
    ok = live & inside
    k = np.nonzero(ok)[0]
    dest = ti[ok] * ny + tj[ok]
    sx, sy = both[..., 0][ok] * hx, both[..., 1][ok] * hy
    dxx, dxy, dyy = d_reg[:, 0, 0], d_reg[:, 0, 1], d_reg[:, 1, 1]
    bx, by = b[..., 0].ravel(), b[..., 1].ravel()
    axx, axy, ayy = (0.5 * (v[k] + v[dest]) for v in (dxx, dxy, dyy))
    cx, cy = 0.5 * (bx[k] + bx[dest]), 0.5 * (by[k] + by[dest])
    if potential is not None:
        pot_flat = potential.ravel()
        along = -(pot_flat[dest] - pot_flat[k]) - (sx * cx + sy * cy)
        fix = along / (sx**2 + sy**2)
        cx, cy = cx + fix * sx, cy + fix * sy
    # limited cells: the drift must be exact for the tensor their stencil represents,
    # S^-1 (sum rho f f^T) S^-1 in physical units, and is taken from the cell alone
    fxx, fxy, fyy = dxx.copy(), dxy.copy(), dyy.copy()  # per cell, the tensor the drift fits
    if limited.any():
        o, w = offsets[limited].astype(np.float64), weights[limited]
        fxx[limited] = (w * o[..., 0] ** 2).sum(-1) * hx**2 + floor[limited]
        fxy[limited] = (w * o[..., 0] * o[..., 1]).sum(-1) * hx * hy
        fyy[limited] = (w * o[..., 1] ** 2).sum(-1) * hy**2 + floor[limited]
        lim = limited[k]
        kl = k[lim]
        axx[lim], axy[lim], ayy[lim] = fxx[kl], fxy[kl], fyy[kl]
        cx[lim], cy[lim] = bx[kl], by[kl]
    z = _fit(sx, sy, axx, axy, ayy, cx, cy)
    rho = np.concatenate([weights, weights], axis=1)
    src, dst, rate = k, dest, rho[ok] * _bernoulli(-z)

    # jumps that hit a wall: their rate, from the source cell's own tensor and drift
    out = live & ~inside
    kw = np.nonzero(out)[0]
    wx, wy = both[..., 0][out] * hx, both[..., 1][out] * hy
    zw = _fit(wx, wy, fxx[kw], fxy[kw], fyy[kw], bx[kw], by[kw])
    wall = rho[out] * _bernoulli(-zw)
    wall_rate = np.asarray(np.bincount(kw, weights=wall, minlength=n), np.float64).reshape(nx, ny)
    if walls == "projected":
        land = np.clip(ti[out], 0, nx - 1) * ny + np.clip(tj[out], 0, ny - 1)
        moved = land != kw
        src = np.concatenate([src, kw[moved]])
        dst = np.concatenate([dst, land[moved]])
        rate = np.concatenate([rate, wall[moved]])
        z = np.concatenate([z, zw[moved]])
    return Jumps(
        src=src.astype(np.int64),
        dst=dst.astype(np.int64),
        rate=rate,
        fit=z,
        limited=limited.reshape(nx, ny),
        stencil_width=(width[0], width[1]),
        wall_rate=wall_rate,
    )


def _fit(
    sx: FloatArray,
    sy: FloatArray,
    axx: FloatArray,
    axy: FloatArray,
    ayy: FloatArray,
    cx: FloatArray,
    cy: FloatArray,
) -> FloatArray:
    r"""$z = s^\top A^{-1} c$ for jumps $s$, tensors $A$ and drifts $c$, all ``(m,)`` per entry."""
    det = axx * ayy - axy**2
    return np.asarray((sx * (ayy * cx - axy * cy) + sy * (axx * cy - axy * cx)) / det)
