r"""Laplace basin weights of the Gibbs law for constant isotropic noise (theory.md §2.5a).

With $C = \sigma^2 I$ the stationary law is $p_T \propto \exp(-2L/(T\sigma^2))$. Expanding $L$ to
second order around each minimum $\theta_k^*$ (depth $L_k$, Hessian $H_k$, dimension $d$) gives

$$P_k \propto e^{-2L_k/(T\sigma^2)}\,(\pi T\sigma^2)^{d/2}\,\det(H_k)^{-1/2},$$

exact up to factors $1 + O(T)$ and exponentially small tail corrections. For two minima, wide (w)
and sharp (s), the log odds are
$\log(P_w/P_s) = -2(L_w - L_s)/(T\sigma^2) + \tfrac12\log(\det H_s/\det H_w)$: at $T\to0$ the
deepest minimum wins, and higher $T$ tilts the weights towards low $\det H$.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import logsumexp

from sgdtemp.errors import UserError, require_positive

__all__ = ["laplace_log_weights", "laplace_basin_weights", "crossover_temperature"]


def _hessians(hessians: ArrayLike, k: int) -> NDArray[np.float64]:
    """Hessians as ``(k, d, d)``, checked symmetric positive definite."""
    h = np.asarray(hessians, dtype=np.float64)
    if h.ndim == 1:
        h = h[:, None, None]
    if h.ndim != 3 or h.shape[0] != k or h.shape[1] != h.shape[2]:
        raise UserError(
            f"hessians must have shape (k,) or (k, d, d) with k={k} minima, got {h.shape}"
        )
    if not np.all(np.isfinite(h)):
        raise UserError("hessians must be finite")
    if not np.allclose(h, np.swapaxes(h, 1, 2), rtol=1e-10, atol=1e-12 * np.abs(h).max()):
        raise UserError("hessians must be symmetric")
    if not np.all(np.linalg.eigvalsh(h) > 0):
        raise UserError("hessians must be positive definite (each entry must be a strict minimum)")
    return h


def laplace_log_weights(
    depths: ArrayLike, hessians: ArrayLike, temperature: float, noise_var: float
) -> NDArray[np.float64]:
    r"""Normalized log Laplace weights $\log P_k$ (see :func:`laplace_basin_weights`).

    Args:
        depths: the depths $L_k$, ``(k,)``.
        hessians: the Hessians $H_k$, ``(k, d, d)``, or their values ``(k,)`` in 1-D.
        temperature: $T > 0$.
        noise_var: the isotropic noise variance $\sigma^2 > 0$.

    Returns:
        ``(k,)`` log-probabilities; ``logsumexp`` of them is 0.

    Raises:
        UserError: on mismatched shapes, non-finite depths, Hessians that are not symmetric
            positive definite, or non-positive ``temperature`` / ``noise_var``.

    Example:
        >>> np.round(np.exp(laplace_log_weights([0.0, 0.0], [1.0, 4.0], 0.1, 1.0)), 6)
        array([0.666667, 0.333333])
    """
    L = np.asarray(depths, dtype=np.float64)
    if L.ndim != 1 or L.size == 0:
        raise UserError(f"depths must be a non-empty 1-D array, got shape {L.shape}")
    if not np.all(np.isfinite(L)):
        raise UserError("depths must be finite")
    h = _hessians(hessians, L.size)
    require_positive("temperature", temperature)
    require_positive("noise_var", noise_var)
    gibbs_scale = temperature * noise_var
    d = h.shape[1]
    _, logdet = np.linalg.slogdet(h)
    log_w = -2.0 * L / gibbs_scale + 0.5 * d * math.log(math.pi * gibbs_scale) - 0.5 * logdet
    return np.asarray(log_w - logsumexp(log_w), dtype=np.float64)


def laplace_basin_weights(
    depths: ArrayLike, hessians: ArrayLike, temperature: float, noise_var: float
) -> NDArray[np.float64]:
    r"""Laplace basin probabilities of the Gibbs law $e^{-2L/(T\sigma^2)}$.

    $$P_k = \frac{w_k}{\sum_j w_j},\qquad
    \log w_k = -\frac{2L_k}{T\sigma^2} + \frac d2\log(\pi T\sigma^2) - \frac12\log\det H_k,$$

    normalized by log-sum-exp, so that no weight underflows to 0/0 at low $T$.

    Args:
        depths: the depths $L_k$, ``(k,)``.
        hessians: the Hessians $H_k$, ``(k, d, d)``, or their values ``(k,)`` in 1-D.
        temperature: $T > 0$.
        noise_var: the isotropic noise variance $\sigma^2 > 0$.

    Returns:
        ``(k,)`` probabilities summing to 1.

    Raises:
        UserError: as :func:`laplace_log_weights`.

    Example:
        >>> np.round(laplace_basin_weights([0.0, 0.1], [100.0, 1.0], 1e-4, 1.0), 6)
        array([1., 0.])
        >>> np.round(laplace_basin_weights([0.0, 0.1], [100.0, 1.0], 10.0, 1.0), 3)
        array([0.093, 0.907])
    """
    return np.exp(laplace_log_weights(depths, hessians, temperature, noise_var))


def crossover_temperature(
    depth_a: float, depth_b: float, det_h_a: float, det_h_b: float, noise_var: float
) -> float:
    r"""Temperature at which two minima have equal Laplace weight.

    Setting $\log w_a = \log w_b$ (same dimension) gives

    $$T_c = \frac{4\,(L_b - L_a)}{\sigma^2\,\log(\det H_a/\det H_b)},$$

    which for a deep sharp minimum $s$ and a shallow wide minimum $w$ is theory.md's
    $T_c = 4(L_w - L_s)/(\sigma^2\log(\det H_s/\det H_w))$. Below $T_c$ the deeper minimum has
    the larger weight, above it the flatter one.

    A crossover exists only when the deeper minimum is also the sharper one. Otherwise (one
    minimum is both deeper-or-equal and flatter-or-equal, with at least one strict) the order
    of the weights is the same at every $T > 0$, and the function returns ``math.inf``.

    Args:
        depth_a: depth $L_a$.
        depth_b: depth $L_b$.
        det_h_a: $\det H_a > 0$.
        det_h_b: $\det H_b > 0$.
        noise_var: the isotropic noise variance $\sigma^2 > 0$.

    Returns:
        $T_c > 0$, or ``math.inf`` when no crossover exists.

    Raises:
        UserError: on non-positive determinants or noise variance, non-finite depths, or two
            minima of equal depth and equal determinant (equal weights at every $T$).

    Example:
        >>> round(crossover_temperature(0.0, 0.1, 100.0, 1.0, 1.0), 6)  # a deep and sharp
        0.086859
        >>> crossover_temperature(0.0, 0.1, 1.0, 100.0, 1.0)  # a deep and wide: no crossover
        inf
    """
    for name, value in (("depth_a", depth_a), ("depth_b", depth_b)):
        if not math.isfinite(value):
            raise UserError(f"{name} must be finite, got {value}")
    require_positive("det_h_a", det_h_a)
    require_positive("det_h_b", det_h_b)
    require_positive("noise_var", noise_var)
    gap = float(depth_b) - float(depth_a)
    log_ratio = math.log(det_h_a) - math.log(det_h_b)
    if gap == 0.0 and log_ratio == 0.0:
        raise UserError(
            "the two minima have equal depth and equal det H: their weights are equal at every T"
        )
    if gap == 0.0 or log_ratio == 0.0 or (gap > 0) != (log_ratio > 0):
        return math.inf
    return 4.0 * gap / (noise_var * log_ratio)
