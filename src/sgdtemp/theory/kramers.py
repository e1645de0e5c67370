r"""Escape times of the 1-D SGD diffusion: Kramers' rate and the exact mean first-passage time.

The SDE is $d\theta = -L'(\theta)\,dt + \sqrt{T\,C(\theta)}\,dW$, with $t$ = steps $\cdot\,\eta$.

**Temperature convention.** With constant noise $C = c$ the diffusion coefficient is
$D = Tc/2$ and the stationary law is the Boltzmann law $e^{-L/D}$: the *Gibbs temperature* is
$T_{\rm Gibbs} = Tc/2$, not $T$. Kramers' formula is written with $T_{\rm Gibbs}$.

**Mean first-passage time.** For a diffusion $dX = \mu\,dt + \sigma\,dW$ the MFPT $\tau(x)$ to a
target $b > x$, with a reflecting wall at $a < x$, solves
$\mu\tau' + \tfrac12\sigma^2\tau'' = -1$, $\tau(b) = 0$, $\tau'(a) = 0$ (Gardiner, *Handbook of
Stochastic Methods*, §5.2.7). With the scale density $\psi = \exp(-\int 2\mu/\sigma^2)$ the
solution is $\tau(x) = \int_x^b \psi(y)\int_a^y \frac{2}{\sigma^2(z)\psi(z)}\,dz\,dy$. Here
$\mu = -L'$, $\sigma^2 = TC$, so $\psi = e^{(2/T)\Phi}$ with $\Phi = \int L'/C$, and the
unnormalized stationary density is $p_s = C^{-1}e^{-(2/T)\Phi} = 1/(C\psi)$. Hence

$$\tau(x) = \int_x^b \frac{2}{T\,C(y)\,p_s(y)}\int_a^y p_s(z)\,dz\,dy,$$

independent of how $p_s$ is normalized (it appears as a ratio).

**Relaxation between two basins.** Reduced to two states with rates $k_{ab} = 1/\tau_{ab}$ (the
MFPT from minimum $a$ to minimum $b$) and $k_{ba} = 1/\tau_{ba}$, the slowest relaxation rate of
the diffusion is $\lambda_1 \approx k_{ab} + k_{ba}$ (the first non-zero eigenvalue of the
Fokker–Planck operator; relative error $O(T/\Delta\Phi)$, and the estimate errs on the slow
side, since each MFPT also counts the descent into the target well).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy.integrate import trapezoid

from sgdtemp.errors import UserError, require_positive
from sgdtemp.theory.stationary_1d import _as_grid, _log_stationary, _noise_on_grid, _on_grid

__all__ = [
    "kramers_rate_1d",
    "mean_first_passage_time_1d",
    "log_mean_first_passage_time_1d",
    "relaxation_time_1d",
]


def kramers_rate_1d(
    *,
    barrier_height: float,
    curvature_min: float,
    curvature_barrier: float,
    noise_var: float,
    temperature: float,
) -> float:
    r"""Kramers (overdamped Eyring) escape rate over a barrier, constant noise.

    $$k = \frac{\sqrt{h_{\min}\,|h_{\rm bar}|}}{2\pi}\,
    \exp\Big(-\frac{\Delta L}{T_{\rm Gibbs}}\Big),\qquad T_{\rm Gibbs} = \frac{Tc}{2},$$

    for $d\theta = -L'dt + \sqrt{Tc}\,dW$ (time unit: steps $\cdot\,\eta$). $1/k$ is the mean time
    from the minimum to a point well beyond the barrier; it is accurate to $O(T_{\rm Gibbs}/\Delta
    L)$ when $\Delta L \gg T_{\rm Gibbs}$.

    Args:
        barrier_height: $\Delta L = L(\text{barrier}) - L(\text{minimum}) \ge 0$.
        curvature_min: $h_{\min} = L''$ at the minimum, $> 0$.
        curvature_barrier: $h_{\rm bar} = L''$ at the barrier top (its sign is ignored), $\ne 0$.
        noise_var: the constant per-example gradient variance $c > 0$.
        temperature: $T = \eta/B > 0$.

    Returns:
        The rate $k$ per unit SDE time.

    Raises:
        UserError: on a negative barrier, non-positive curvatures (barrier: zero), noise or $T$.

    Example:
        >>> k = kramers_rate_1d(barrier_height=0.25, curvature_min=2.0, curvature_barrier=-1.0,
        ...                     noise_var=1.0, temperature=0.05)
        >>> round(k * 2 * math.pi / math.sqrt(2.0) * math.exp(10.0), 12)  # T_Gibbs = 0.025
        1.0
    """
    if not (math.isfinite(barrier_height) and barrier_height >= 0):
        raise UserError(f"barrier_height must be finite and >= 0, got {barrier_height}")
    require_positive("curvature_min", curvature_min)
    require_positive("|curvature_barrier|", abs(curvature_barrier))
    require_positive("noise_var", noise_var)
    require_positive("temperature", temperature)
    gibbs_temperature = 0.5 * temperature * noise_var
    prefactor = math.sqrt(curvature_min * abs(curvature_barrier)) / (2.0 * math.pi)
    return prefactor * math.exp(-barrier_height / gibbs_temperature)


def _log_cumulative_trapezoid(x: np.ndarray, log_f: np.ndarray) -> np.ndarray:
    r"""$\log\int_{x_0}^{x_i} f$ by the trapezoid rule, in log space (``-inf`` at $i = 0$)."""
    seg = np.log(0.5 * np.diff(x)) + np.logaddexp(log_f[:-1], log_f[1:])
    return np.concatenate(([-np.inf], np.logaddexp.accumulate(seg)))


def log_mean_first_passage_time_1d(
    grid: ArrayLike,
    dL: ArrayLike,
    C: ArrayLike,
    temperature: float,
    start: float,
    target: float,
) -> float:
    r"""Natural log of :func:`mean_first_passage_time_1d` (finite where the time overflows).

    Args:
        grid: strictly increasing points, ``(n,)``.
        dL: $L'$ on the grid, ``(n,)``.
        C: noise variance $C > 0$ on the grid, ``(n,)`` or a scalar.
        temperature: $T > 0$.
        start: starting point, inside the grid.
        target: target point, inside the grid.

    Returns:
        $\log\tau$ (``-inf`` when ``start == target``).

    Raises:
        UserError: as :func:`mean_first_passage_time_1d`.

    Example:
        >>> grid = np.linspace(0.0, 1.0, 11)
        >>> round(math.exp(log_mean_first_passage_time_1d(grid, 0.0, 1.0, 0.5, 0.0, 1.0)), 12)
        2.0
    """
    g = _as_grid(grid)
    d = _on_grid(dL, g, "dL")
    c = _noise_on_grid(C, g)
    require_positive("temperature", temperature)
    for name, value in (("start", start), ("target", target)):
        if not (math.isfinite(value) and g[0] <= value <= g[-1]):
            raise UserError(f"{name} must lie inside the grid [{g[0]}, {g[-1]}], got {value}")
    if start == target:
        return -math.inf
    if target < start:  # mirror θ -> -θ so that the target lies to the right of the start
        g, d, c = -g[::-1], -d[::-1], c[::-1]
        start, target = -start, -target
    # Insert start and target into the grid (linear interpolation of L' and C there).
    x = np.union1d(g, [start, target])
    d = np.interp(x, g, d)
    c = np.interp(x, g, c)
    phi, log_p = _log_stationary(x, d, c, temperature)
    log_inner = _log_cumulative_trapezoid(x, log_p)  # log ∫_a^y p_s
    # Integrand 2 / (T C p_s) * inner, with -log C - log p_s = (2/T) Φ.
    log_g = math.log(2.0 / temperature) + log_inner + (2.0 / temperature) * phi
    i0, i1 = np.searchsorted(x, [start, target])
    y, lg = x[i0 : i1 + 1], log_g[i0 : i1 + 1]
    top = float(lg.max())
    return top + math.log(float(trapezoid(np.exp(lg - top), y)))


def mean_first_passage_time_1d(
    grid: ArrayLike,
    dL: ArrayLike,
    C: ArrayLike,
    temperature: float,
    start: float,
    target: float,
) -> float:
    r"""Exact mean first-passage time of $d\theta = -L'dt + \sqrt{T C(\theta)}\,dW$, by quadrature.

    With a reflecting wall at the grid end *behind* the start (``grid[0]`` when
    ``target > start``, ``grid[-1]`` when ``target < start``) and, for ``target > start``,

    $$\tau = \int_{\rm start}^{\rm target}\frac{2}{T\,C(y)\,p_s(y)}
    \int_{{\rm grid}[0]}^{y} p_s(z)\,dz\,dy,\qquad
    p_s = \frac1C\exp\Big(-\frac2T\int\frac{L'}{C}\Big)$$

    (derivation in the module docstring; mirrored for ``target < start``). Both integrals use
    the trapezoid rule in log space, on the grid with ``start`` and ``target`` inserted (where
    $L'$ and $C$ are linearly interpolated); the error is second order in the grid step, and the
    grid must resolve the barrier region, where the integrand $\propto e^{(2/T)\Phi}$ peaks.

    Args:
        grid: strictly increasing points, ``(n,)``.
        dL: $L'$ on the grid, ``(n,)``.
        C: noise variance $C > 0$ on the grid, ``(n,)`` or a scalar.
        temperature: $T > 0$.
        start: starting point, inside the grid.
        target: target point, inside the grid.

    Returns:
        $\tau$ in SDE time (steps $\cdot\,\eta$); ``math.inf`` if it exceeds the float range
        (use :func:`log_mean_first_passage_time_1d` then), 0 when ``start == target``.

    Raises:
        UserError: on a malformed grid, $C \le 0$, $T \le 0$, or start/target outside the grid.

    Example:
        >>> # Free diffusion (D = T c / 2) from a reflecting wall at 0 to 1: tau = 1 / (2 D)
        >>> grid = np.linspace(0.0, 1.0, 11)
        >>> round(mean_first_passage_time_1d(grid, 0.0, 1.0, 0.5, 0.0, 1.0), 12)
        2.0
    """
    log_tau = log_mean_first_passage_time_1d(grid, dL, C, temperature, start, target)
    return math.exp(log_tau) if log_tau < 709.0 else math.inf


def relaxation_time_1d(
    grid: ArrayLike,
    dL: ArrayLike,
    C: ArrayLike,
    temperature: float,
    minima: tuple[float, float],
) -> float:
    r"""Slowest relaxation time $1/\lambda_1$ of the 1-D SGD diffusion between two basins.

    $$\frac1{\lambda_1} \approx \frac{1}{1/\tau_{ab} + 1/\tau_{ba}},$$

    with $\tau_{ab}$, $\tau_{ba}$ the exact mean first-passage times between the two minima
    (:func:`mean_first_passage_time_1d`, a reflecting wall at the grid end behind each start),
    combined in log space. This is the time over which a distribution started anywhere
    forgets its start: after $k$ relaxation times the basin masses are within
    $e^{-k}$ times their initial error of the stationary ones. It overestimates $1/\lambda_1$
    slightly at high temperature (see the module docstring), which is the safe side for
    planning a simulation.

    Args:
        grid: strictly increasing points, ``(n,)``.
        dL: $L'$ on the grid, ``(n,)``.
        C: noise variance $C > 0$ on the grid, ``(n,)`` or a scalar.
        temperature: $T > 0$ (the effective one, e.g. with the without-replacement factor).
        minima: the two minimizers $(a, b)$, inside the grid.

    Returns:
        The relaxation time in SDE time (steps $\cdot\,\eta$); ``math.inf`` beyond the float
        range.

    Raises:
        UserError: as :func:`mean_first_passage_time_1d`, or if the two minima coincide.

    Example:
        >>> grid = np.linspace(-2.0, 2.0, 2001)
        >>> t = relaxation_time_1d(grid, grid**3 - grid, 1.0, 0.1, (-1.0, 1.0))
        >>> round(t)  # symmetric wells: half the MFPT from one minimum to the other (730)
        365
    """
    a, b = (float(v) for v in minima)
    if a == b:
        raise UserError(f"minima must be two distinct points, got {minima}")
    log_ab = log_mean_first_passage_time_1d(grid, dL, C, temperature, a, b)
    log_ba = log_mean_first_passage_time_1d(grid, dL, C, temperature, b, a)
    log_time = -float(np.logaddexp(-log_ab, -log_ba))
    return math.exp(log_time) if log_time < 709.0 else math.inf
