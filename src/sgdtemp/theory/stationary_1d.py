r"""Exact stationary law of the 1-D SGD diffusion (theory.md §2.5c), on a grid, in float64.

The SDE $d\theta = -L'(\theta)\,dt + \sqrt{T\,C(\theta)}\,dW$ has the Fokker–Planck equation
$\partial_t p = \partial_\theta(p L') + \tfrac T2\,\partial_\theta^2(C p)$. On an interval with
reflecting ends the stationary flux vanishes, $pL' + \tfrac T2 (Cp)' = 0$, which integrates to

$$p_T(\theta) \propto \frac{1}{C(\theta)}\exp\Big(-\frac 2T\,\Phi(\theta)\Big),\qquad
\Phi(\theta) = \int_{\theta_0}^{\theta}\frac{L'(u)}{C(u)}\,du ,$$

equivalently $p_T \propto e^{-(2/T)F_T}$ with the free energy $F_T = \Phi + \tfrac T2 \log C$.
$\Phi$ is the *effective potential*; with constant $C = \sigma^2$ it is $(L - L(\theta_0))/\sigma^2$
and $p_T$ is the Gibbs law $e^{-2L/(T\sigma^2)}$ (:func:`gibbs_density_1d`).

Everything is computed in log space with the maximum subtracted, so nothing overflows even at
$T = 10^{-4}$; densities are normalized so that their trapezoid integral over the grid is 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.integrate import cumulative_trapezoid, trapezoid

from sgdtemp.errors import UserError, require_positive

__all__ = [
    "Stationary1D",
    "stationary_density_1d",
    "gibbs_density_1d",
    "basin_probability",
    "mean_and_var",
]

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class Stationary1D:
    r"""A stationary density of a 1-D diffusion on a grid.

    Attributes:
        grid: increasing grid points, ``(n,)``.
        density: normalized density on the grid (trapezoid integral 1), ``(n,)``.
        log_density: its logarithm, computed in log space (finite even where ``density``
            underflows to 0), ``(n,)``.
        effective_potential: $\Phi(\theta) = \int L'/C$, shifted so that its minimum is 0, ``(n,)``.
            For :func:`gibbs_density_1d` it is $L - \min L$ (loss units).
        free_energy: $F_T = \Phi + \tfrac T2\log C$, shifted so that its minimum is 0, ``(n,)``;
            $p \propto e^{-(2/T)F_T}$. For :func:`gibbs_density_1d` it equals
            ``effective_potential`` and $p \propto e^{-2F/(T\sigma^2)}$.
        temperature: the temperature $T$.
    """

    grid: FloatArray
    density: FloatArray
    log_density: FloatArray
    effective_potential: FloatArray
    free_energy: FloatArray
    temperature: float

    def basin_probability(self, lo: float, hi: float) -> float:
        """Mass between ``lo`` and ``hi``; see :func:`basin_probability`."""
        return basin_probability(self, lo, hi)

    def mean_and_var(self, lo: float | None = None, hi: float | None = None) -> tuple[float, float]:
        """Mean and variance conditional on ``[lo, hi]``; see :func:`mean_and_var`."""
        return mean_and_var(self, lo, hi)


# ----------------------------------------------------------------------------- validation helpers


def _as_grid(grid: ArrayLike, *, name: str = "grid") -> FloatArray:
    """A 1-D, finite, strictly increasing float64 grid with at least 2 points."""
    g = np.asarray(grid, dtype=np.float64)
    if g.ndim != 1 or g.size < 2:
        raise UserError(f"{name} must be a 1-D array with at least 2 points, got shape {g.shape}")
    if not np.all(np.isfinite(g)):
        raise UserError(f"{name} must be finite")
    if not np.all(np.diff(g) > 0):
        raise UserError(f"{name} must be strictly increasing")
    return g


def _on_grid(values: ArrayLike, grid: FloatArray, name: str) -> FloatArray:
    """``values`` as a finite float64 array of the grid's shape (a scalar is broadcast)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 0:
        v = np.full_like(grid, float(v))
    if v.shape != grid.shape:
        raise UserError(f"{name} must have the grid's shape {grid.shape}, got {v.shape}")
    if not np.all(np.isfinite(v)):
        raise UserError(f"{name} must be finite")
    return v


def _noise_on_grid(C: ArrayLike, grid: FloatArray) -> FloatArray:
    """The noise variance on the grid, checked to be positive."""
    c = _on_grid(C, grid, "C")
    if not np.all(c > 0):
        raise UserError(
            f"C (noise variance) must be > 0 everywhere on the grid, got min {c.min():.3g}; "
            "the 1-D stationary law needs non-degenerate noise"
        )
    return c


def _log_stationary(
    grid: FloatArray, dL: FloatArray, c: FloatArray, temperature: float
) -> tuple[FloatArray, FloatArray]:
    r"""Return $(\Phi, \log p)$ on the grid, unnormalized: $\log p = -(2/T)\Phi - \log C$."""
    phi = cumulative_trapezoid(dL / c, grid, initial=0.0)
    return phi, -(2.0 / temperature) * phi - np.log(c)


def _normalize_log(grid: FloatArray, log_p: FloatArray) -> FloatArray:
    """Normalized log density: subtract the max, then the log of the trapezoid integral."""
    shifted = log_p - log_p.max()
    return shifted - math.log(float(trapezoid(np.exp(shifted), grid)))


# ----------------------------------------------------------------------------- densities


def stationary_density_1d(
    grid: ArrayLike, dL: ArrayLike, C: ArrayLike, temperature: float
) -> Stationary1D:
    r"""Exact stationary density of $d\theta = -L'dt + \sqrt{T C(\theta)}\,dW$, reflecting ends.

    $$p_T(\theta) = \frac{1}{Z\,C(\theta)}\exp\Big(-\frac2T\int_{\theta_0}^{\theta}
    \frac{L'(u)}{C(u)}du\Big),\qquad \theta_0 = \text{grid}[0],$$

    with the integral by the cumulative trapezoid rule (second order in the grid step) and $Z$
    the trapezoid integral over the grid.

    Args:
        grid: strictly increasing points, uniform or not, ``(n,)``.
        dL: the loss derivative $L'$ on the grid, ``(n,)``.
        C: the per-example gradient variance $C(\theta) > 0$ on the grid, ``(n,)`` or a scalar.
        temperature: $T = \eta/B > 0$ (:func:`sgdtemp.theory.temperature`).

    Returns:
        The :class:`Stationary1D` law.

    Raises:
        UserError: on a malformed grid, mismatched shapes, non-finite values, $C \le 0$ or
            $T \le 0$.

    Example:
        >>> grid = np.linspace(-1.0, 1.0, 2001)
        >>> stat = stationary_density_1d(grid, grid, 1.0, 0.02)  # L = x^2/2: N(0, T C / 2)
        >>> round(mean_and_var(stat)[1], 6)
        0.01
    """
    g = _as_grid(grid)
    d = _on_grid(dL, g, "dL")
    c = _noise_on_grid(C, g)
    require_positive("temperature", temperature)
    phi, log_p = _log_stationary(g, d, c, temperature)
    log_density = _normalize_log(g, log_p)
    phi = phi - phi.min()
    free = phi + 0.5 * temperature * np.log(c)
    return Stationary1D(
        grid=g,
        density=np.exp(log_density),
        log_density=log_density,
        effective_potential=phi,
        free_energy=free - free.min(),
        temperature=float(temperature),
    )


def gibbs_density_1d(
    grid: ArrayLike, L: ArrayLike, temperature: float, noise_var: float
) -> Stationary1D:
    r"""Gibbs law in the loss for constant isotropic noise $C = \sigma^2$ (theory.md §2.5a).

    $$p_T(\theta) = \frac1Z \exp\Big(-\frac{2 L(\theta)}{T\sigma^2}\Big),$$

    i.e. a Boltzmann law at the Gibbs temperature $T\sigma^2/2$. Here ``effective_potential`` and
    ``free_energy`` are both $L - \min L$ in loss units ($\sigma^2$ times the $\Phi$ that
    :func:`stationary_density_1d` reports for the same problem).

    Args:
        grid: strictly increasing points, ``(n,)``.
        L: the loss on the grid, ``(n,)``.
        temperature: $T > 0$.
        noise_var: the constant noise variance $\sigma^2 > 0$.

    Returns:
        The :class:`Stationary1D` law.

    Raises:
        UserError: on a malformed grid or non-positive ``temperature`` / ``noise_var``.

    Example:
        >>> grid = np.linspace(-1.0, 1.0, 2001)
        >>> stat = gibbs_density_1d(grid, 2.0 * grid**2, 0.02, 1.0)  # N(0, T sigma^2 / (2 h))
        >>> round(mean_and_var(stat)[1], 6)
        0.0025
    """
    g = _as_grid(grid)
    loss = _on_grid(L, g, "L")
    require_positive("temperature", temperature)
    require_positive("noise_var", noise_var)
    log_density = _normalize_log(g, -2.0 * loss / (temperature * noise_var))
    shifted = loss - loss.min()
    return Stationary1D(
        grid=g,
        density=np.exp(log_density),
        log_density=log_density,
        effective_potential=shifted,
        free_energy=shifted.copy(),
        temperature=float(temperature),
    )


# ----------------------------------------------------------------------------- summaries


def _restrict(stat: Stationary1D, lo: float | None, hi: float | None) -> tuple[FloatArray, ...]:
    """Grid and density on ``[lo, hi]`` clipped to the grid, with interpolated end points."""
    g, p = stat.grid, stat.density
    a = g[0] if lo is None else max(float(lo), float(g[0]))
    b = g[-1] if hi is None else min(float(hi), float(g[-1]))
    if lo is not None and hi is not None and float(lo) > float(hi):
        raise UserError(f"need lo <= hi, got lo={lo}, hi={hi}")
    if a >= b:
        return np.array([a, a]), np.zeros(2)
    inner = (g > a) & (g < b)
    x = np.concatenate(([a], g[inner], [b]))
    return x, np.interp(x, g, p)


def basin_probability(stat: Stationary1D, lo: float, hi: float) -> float:
    r"""Stationary mass $\int_{lo}^{hi} p$, the density linearly interpolated at the ends.

    Limits outside the grid are clipped to it (no mass lives outside); ``-inf``/``inf`` are fine.
    The integral is the exact integral of the piecewise-linear interpolant, consistent with the
    trapezoid normalization, so the masses of adjacent intervals add up to 1.

    Args:
        stat: a stationary law.
        lo: lower limit.
        hi: upper limit, ``>= lo``.

    Returns:
        The probability, in $[0, 1]$.

    Raises:
        UserError: if ``lo > hi``.

    Example:
        >>> grid = np.linspace(-1.0, 1.0, 201)
        >>> stat = stationary_density_1d(grid, grid, 1.0, 0.1)
        >>> round(basin_probability(stat, -np.inf, 0.0), 12)
        0.5
    """
    x, p = _restrict(stat, lo, hi)
    return float(trapezoid(p, x))


def mean_and_var(
    stat: Stationary1D, lo: float | None = None, hi: float | None = None
) -> tuple[float, float]:
    r"""Mean and variance of the law conditional on $[lo, hi]$ (whole grid by default).

    $\mu = \int x p / \int p$ and $v = \int (x-\mu)^2 p / \int p$ over the interval, by the
    trapezoid rule with linearly interpolated end points.

    Args:
        stat: a stationary law.
        lo: lower limit, or ``None`` for the grid start.
        hi: upper limit, or ``None`` for the grid end.

    Returns:
        ``(mean, variance)``.

    Raises:
        UserError: if ``lo > hi`` or the interval carries no mass.

    Example:
        >>> grid = np.linspace(-1.0, 1.0, 2001)
        >>> stat = stationary_density_1d(grid, grid - 0.1, 1.0, 0.02)
        >>> [round(v, 6) for v in mean_and_var(stat)]
        [0.1, 0.01]
    """
    x, p = _restrict(stat, lo, hi)
    mass = float(trapezoid(p, x))
    if not mass > 0:
        raise UserError(f"the interval [{lo}, {hi}] carries no probability mass")
    mean = float(trapezoid(x * p, x)) / mass
    var = float(trapezoid((x - mean) ** 2 * p, x)) / mass
    return mean, var
