r"""Compiled (Numba) kernel of :func:`~sgdtemp.simulate.run_reflected_sde` for feature landscapes.

The adaptive steps of the reflected diffusion leave every chain on its own clock: a few chains
far out, where the noise is large, take thousands of small steps while the rest wait, so a
batched loop over all chains pays the per-operation overhead of the slowest chain's step count.
Chain by chain, compiled, each step costs its arithmetic only (about 0.1 µs). This kernel serves
the 2-D landscapes that are linear in nine features (:mod:`sgdtemp.landscapes.double_well_2d`):
$\nabla L = J w$ and $C = J\Sigma J^\top$ with the feature Jacobian $J(\theta)$ ``(2, 9)``. The
normals come from a NumPy ``Generator`` passed in (its state advances; nothing global).
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["feature_reflected_em"]

_MAX_BOUNCES = 8


@numba.njit(cache=True, nogil=True)
def _coefficients(x, y, g, w, cov, out):  # pragma: no cover - compiled
    """``out = (grad_x, grad_y, C_xx, C_xy, C_yy)`` at ``(x, y)``."""
    e = math.exp(g * x)
    jx = np.empty(9)
    jx[0] = 4.0 * x * x * x
    jx[1] = 3.0 * x * x
    jx[2] = 2.0 * x
    jx[3] = 1.0
    jx[4] = 0.0
    jx[5] = g * e * y * y
    jx[6] = g * e * y
    jx[7] = g * e
    jx[8] = 0.0
    jy5, jy6 = 2.0 * e * y, e  # the y row: 2 e y, e, 1 at features 5, 6, 8
    gx = 0.0
    for i in range(9):
        gx += jx[i] * w[i]
    gy = w[5] * jy5 + w[6] * jy6 + w[8]
    cxx = 0.0
    cxy = 0.0
    for i in range(9):
        s = 0.0
        for j in range(9):
            s += cov[i, j] * jx[j]
        cxx += jx[i] * s
        cxy += jx[i] * (cov[i, 5] * jy5 + cov[i, 6] * jy6 + cov[i, 8])
    v5 = cov[5, 5] * jy5 + cov[5, 6] * jy6 + cov[5, 8]
    v6 = cov[6, 5] * jy5 + cov[6, 6] * jy6 + cov[6, 8]
    v8 = cov[8, 5] * jy5 + cov[8, 6] * jy6 + cov[8, 8]
    out[0] = gx
    out[1] = gy
    out[2] = cxx
    out[3] = cxy
    out[4] = jy5 * v5 + jy6 * v6 + v8


@numba.njit(cache=True, nogil=True)
def feature_reflected_em(
    theta0, times, box, g, w, cov, temperature, max_dt, max_move, conormal, rng, thetas, steps
):  # pragma: no cover - compiled
    """Run every chain of ``theta0`` ``(n, 2)`` to each of ``times``, into ``thetas`` ``(R, n, 2)``.

    ``box`` is ``(xmin, xmax, ymin, ymax)``; ``thetas[0]`` must hold ``theta0``; ``steps``
    ``(n,)`` receives each chain's step count. Same step rule and reflections as the batched
    path of :func:`~sgdtemp.simulate.run_reflected_sde`.
    """
    lo = (box[0], box[2])
    hi = (box[1], box[3])
    c = np.empty(5)
    half_t = 0.5 * temperature
    for n in range(theta0.shape[0]):
        x, y, t = theta0[n, 0], theta0[n, 1], 0.0
        count = 0
        for r in range(1, times.shape[0]):
            target = times[r]
            while t < target:
                _coefficients(x, y, g, w, cov, c)
                gx, gy, cxx, cxy, cyy = c[0], c[1], c[2], c[3], c[4]
                spread = half_t * (
                    0.5 * (cxx + cyy) + math.sqrt(0.25 * (cxx - cyy) ** 2 + cxy * cxy)
                )
                dt = max_dt
                if spread > 0.0 and max_move * max_move / (2.0 * spread) < dt:
                    dt = max_move * max_move / (2.0 * spread)
                speed = math.sqrt(gx * gx + gy * gy)
                if speed > 0.0 and max_move / speed < dt:
                    dt = max_move / speed
                lands = dt >= target - t
                if lands:
                    dt = target - t
                det = cxx * cyy - cxy * cxy
                s = math.sqrt(det) if det > 0.0 else 0.0
                tr = math.sqrt(cxx + cyy + 2.0 * s) if cxx + cyy + 2.0 * s > 0.0 else 0.0
                inv = 1.0 / tr if tr > 0.0 else 0.0
                a, b, d = (cxx + s) * inv, cxy * inv, (cyy + s) * inv
                z1 = rng.standard_normal()
                z2 = rng.standard_normal()
                h = math.sqrt(temperature * dt)
                nx = x - dt * gx + h * (a * z1 + b * z2)
                ny = y - dt * gy + h * (b * z1 + d * z2)
                for _ in range(_MAX_BOUNCES):
                    ex = nx - hi[0] if nx > hi[0] else (nx - lo[0] if nx < lo[0] else 0.0)
                    ey = ny - hi[1] if ny > hi[1] else (ny - lo[1] if ny < lo[1] else 0.0)
                    if ex == 0.0 and ey == 0.0:
                        break
                    if conormal:
                        if ex != 0.0:
                            if cxx > 0.0:
                                nx -= 2.0 * ex
                                ny -= 2.0 * ex * cxy / cxx
                            else:
                                nx -= 2.0 * ex
                        if ey != 0.0:
                            if cyy > 0.0:
                                ny -= 2.0 * ey
                                nx -= 2.0 * ey * cxy / cyy
                            else:
                                ny -= 2.0 * ey
                    else:
                        nx -= 2.0 * ex
                        ny -= 2.0 * ey
                nx = min(max(nx, lo[0]), hi[0])
                ny = min(max(ny, lo[1]), hi[1])
                x, y = nx, ny
                t = target if lands else t + dt
                count += 1
            thetas[r, n, 0] = x
            thetas[r, n, 1] = y
        steps[n] = count
