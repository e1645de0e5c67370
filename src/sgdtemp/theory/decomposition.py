r"""Test loss of a parameter law under a train/test shift, term by term (theory.md §1.3).

In basin $k$ the train loss has its minimum at $\theta^*$ (depth $L^*$) and the test loss at
$\tilde\theta^*$ (depth $\tilde L^*$, Hessian $\tilde H$). A parameter law with mean
$\mu = \theta^* + b$ (bias $b$) and covariance $\Sigma$ pays, to second order in the test loss,

$$\mathbb E[\tilde L] \approx \tilde L^*
+ \underbrace{\tfrac12 s^\top\tilde H s}_{\text{shift-curvature}}
+ \underbrace{s^\top\tilde H b}_{\text{cross}}
+ \underbrace{\tfrac12 b^\top\tilde H b}_{\text{bias-curvature}}
+ \underbrace{\tfrac12\operatorname{tr}(\tilde H\Sigma)}_{\text{covariance-curvature}},
\qquad s = \theta^* - \tilde\theta^* .$$

This is exact when $\tilde L$ is quadratic. Over basins, $\mathbb E[\tilde L] = \sum_k P_k
\mathbb E[\tilde L\mid k]$ (:func:`mix_decompositions`). The *vertical* term
$\tilde L^* - L^*$ separates the test depth from the train depth, so that
$\mathbb E[\tilde L] = L^* + \text{vertical} + \text{the four curvature terms}$.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sgdtemp.errors import UserError

__all__ = ["ShiftDecomposition", "decompose_test_loss", "mix_decompositions"]

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class ShiftDecomposition:
    r"""The terms of the expected test loss in one basin, or mixed over basins.

    Attributes:
        shift: $s = \theta^* - \tilde\theta^*$, ``(d,)`` or a float in 1-D.
        bias: $b = \mu - \theta^*$, ``(d,)`` or a float in 1-D.
        train_depth: $L^* = L(\theta^*)$.
        test_depth: $\tilde L^* = \tilde L(\tilde\theta^*)$.
        vertical: $\tilde L^* - L^*$.
        shift_curvature: $\tfrac12 s^\top\tilde H s$.
        cross: $s^\top\tilde H b$.
        bias_curvature: $\tfrac12 b^\top\tilde H b$.
        covariance_curvature: $\tfrac12\operatorname{tr}(\tilde H\Sigma)$.
        predicted_test_loss: $\tilde L^*$ plus the four curvature terms.
    """

    shift: FloatArray | float
    bias: FloatArray | float
    train_depth: float
    test_depth: float
    vertical: float
    shift_curvature: float
    cross: float
    bias_curvature: float
    covariance_curvature: float
    predicted_test_loss: float


def _vector(name: str, value: ArrayLike) -> FloatArray:
    v = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if v.ndim != 1:
        raise UserError(f"{name} must be a float or a 1-D vector, got shape {v.shape}")
    if not np.all(np.isfinite(v)):
        raise UserError(f"{name} must be finite")
    return v


def _matrix(name: str, value: ArrayLike, d: int) -> FloatArray:
    m = np.asarray(value, dtype=np.float64)
    m = m.reshape(1, 1) if m.ndim == 0 else m
    if m.shape != (d, d):
        raise UserError(f"{name} must have shape {(d, d)} (or be a float in 1-D), got {m.shape}")
    if not np.all(np.isfinite(m)):
        raise UserError(f"{name} must be finite")
    return m


def _finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise UserError(f"{name} must be finite, got {value}")
    return float(value)


def decompose_test_loss(
    *,
    train_min: ArrayLike,
    test_min: ArrayLike,
    test_hessian: ArrayLike,
    mean: ArrayLike,
    cov: ArrayLike,
    train_depth: float,
    test_depth: float,
) -> ShiftDecomposition:
    r"""Split the expected test loss of one basin into shift, cross, bias and covariance terms.

    See the module docstring for the formula. $\tilde H$ need not be positive definite
    (the terms are then signed).

    Args:
        train_min: train minimum $\theta^*$, ``(d,)`` or a float.
        test_min: paired test minimum $\tilde\theta^*$, ``(d,)`` or a float.
        test_hessian: $\tilde H = \nabla^2\tilde L(\tilde\theta^*)$, ``(d, d)`` or a float.
        mean: mean $\mu$ of the parameter law in the basin, ``(d,)`` or a float.
        cov: its covariance $\Sigma$, ``(d, d)`` or a float.
        train_depth: $L(\theta^*)$.
        test_depth: $\tilde L(\tilde\theta^*)$.

    Returns:
        The :class:`ShiftDecomposition`; ``shift`` and ``bias`` are floats when all vector
        inputs are floats.

    Raises:
        UserError: on mismatched shapes or non-finite values.

    Example:
        >>> dec = decompose_test_loss(train_min=1.0, test_min=0.0, test_hessian=2.0,
        ...                           mean=1.5, cov=0.1, train_depth=0.0, test_depth=0.25)
        >>> dec.shift_curvature, dec.cross, dec.bias_curvature, dec.covariance_curvature
        (1.0, 1.0, 0.25, 0.1)
        >>> dec.predicted_test_loss  # 0.25 + (1/2) * 2 * (1.5 - 0)^2 + (1/2) * 2 * 0.1
        2.6
    """
    scalar = all(np.ndim(v) == 0 for v in (train_min, test_min, mean))
    theta_star = _vector("train_min", train_min)
    d = theta_star.size
    test_star = _vector("test_min", test_min)
    mu = _vector("mean", mean)
    for name, v in (("test_min", test_star), ("mean", mu)):
        if v.shape != (d,):
            raise UserError(f"{name} must have shape {(d,)} like train_min, got {v.shape}")
    h = _matrix("test_hessian", test_hessian, d)
    sigma = _matrix("cov", cov, d)
    l_train = _finite("train_depth", train_depth)
    l_test = _finite("test_depth", test_depth)

    s = theta_star - test_star
    b = mu - theta_star
    shift_curv = 0.5 * float(s @ h @ s)
    cross = float(s @ h @ b)
    bias_curv = 0.5 * float(b @ h @ b)
    cov_curv = 0.5 * float(np.sum(h * sigma.T))
    return ShiftDecomposition(
        shift=float(s[0]) if scalar else s,
        bias=float(b[0]) if scalar else b,
        train_depth=l_train,
        test_depth=l_test,
        vertical=l_test - l_train,
        shift_curvature=shift_curv,
        cross=cross,
        bias_curvature=bias_curv,
        covariance_curvature=cov_curv,
        predicted_test_loss=l_test + shift_curv + cross + bias_curv + cov_curv,
    )


def mix_decompositions(
    decomps: Sequence[ShiftDecomposition], probs: ArrayLike
) -> ShiftDecomposition:
    r"""Average per-basin decompositions with the basin probabilities $P_k$.

    Every field, vectors included, becomes $\sum_k P_k\,(\cdot)_k$; in particular
    ``predicted_test_loss`` is $\sum_k P_k\,\mathbb E[\tilde L\mid k]$. ``probs`` must sum to 1
    within 1e-6 (e.g. basin masses of a stationary law) and are renormalized exactly.

    Args:
        decomps: one decomposition per basin, ``k`` of them, with equally shaped vectors.
        probs: basin probabilities $P_k \ge 0$, ``(k,)``.

    Returns:
        The mixed :class:`ShiftDecomposition`.

    Raises:
        UserError: on an empty list, a length mismatch, negative probabilities, probabilities
            not summing to 1, or decompositions of different dimension.

    Example:
        >>> a = decompose_test_loss(train_min=0.0, test_min=0.0, test_hessian=1.0, mean=0.0,
        ...                         cov=0.0, train_depth=0.0, test_depth=1.0)
        >>> b = decompose_test_loss(train_min=2.0, test_min=1.0, test_hessian=4.0, mean=2.0,
        ...                         cov=0.0, train_depth=0.0, test_depth=0.0)
        >>> mix = mix_decompositions([a, b], [0.75, 0.25])
        >>> mix.predicted_test_loss, mix.shift_curvature
        (1.25, 0.5)
    """
    p = np.asarray(probs, dtype=np.float64)
    if len(decomps) == 0:
        raise UserError("decomps must hold at least one decomposition")
    if p.shape != (len(decomps),):
        raise UserError(f"probs must have shape ({len(decomps)},), one per basin, got {p.shape}")
    if not (np.all(np.isfinite(p)) and np.all(p >= 0)):
        raise UserError("probs must be finite and non-negative")
    if abs(p.sum() - 1.0) > 1e-6:
        raise UserError(f"probs must sum to 1 (within 1e-6), got {p.sum():.9g}")
    p = p / p.sum()

    def mixed(field: str) -> float:
        return float(sum(pk * getattr(dk, field) for pk, dk in zip(p, decomps)))

    def mixed_vector(field: str) -> FloatArray | float:
        values = [np.asarray(getattr(dk, field), dtype=np.float64) for dk in decomps]
        if any(v.shape != values[0].shape for v in values):
            raise UserError(f"decompositions have different dimensions ({field} shapes differ)")
        out = np.tensordot(p, np.stack(values), axes=1)
        return float(out) if out.ndim == 0 else out

    return ShiftDecomposition(
        shift=mixed_vector("shift"),
        bias=mixed_vector("bias"),
        train_depth=mixed("train_depth"),
        test_depth=mixed("test_depth"),
        vertical=mixed("vertical"),
        shift_curvature=mixed("shift_curvature"),
        cross=mixed("cross"),
        bias_curvature=mixed("bias_curvature"),
        covariance_curvature=mixed("covariance_curvature"),
        predicted_test_loss=mixed("predicted_test_loss"),
    )
