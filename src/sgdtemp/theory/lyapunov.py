r"""Stationary covariance and bias of SGD near a minimum (theory.md §2.4, §2.5d, §2.6).

Linearizing SGD at a minimum with Hessian $H$ and per-example gradient covariance $C$ gives the
recursion $\theta_{k+1} - \theta^* = (I - \eta H)(\theta_k - \theta^*) - \eta\,\xi_k$ with
$\operatorname{Cov}\xi_k = C/B$. Its stationary covariance solves the *discrete* Lyapunov
equation $\Sigma = (I-\eta H)\Sigma(I-\eta H) + \eta^2 C/B$, i.e. with $T = \eta/B$

$$H\Sigma + \Sigma H - \eta\,H\Sigma H = T\,C,$$

and its SDE limit $\eta\to0$ at fixed $T$ solves the *continuous* one, $H\Sigma + \Sigma H = TC$.
Both are solved in the eigenbasis $H = V\Lambda V^\top$, $C' = V^\top C V$:

$$\Sigma'_{ij} = \frac{T\,C'_{ij}}{\lambda_i + \lambda_j - \eta\lambda_i\lambda_j},\qquad
\Sigma = V\Sigma' V^\top .$$

The stationary mean is shifted from the minimum by the bias
$b = -\tfrac12 H^{-1}(\nabla^3 L : \Sigma) = O(T)$ (:func:`stationary_bias`).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sgdtemp.errors import UserError, require_positive

__all__ = ["lyapunov_continuous", "lyapunov_discrete", "stationary_bias"]

FloatArray = NDArray[np.float64]


def _symmetric(name: str, value: ArrayLike) -> tuple[FloatArray, bool]:
    """``value`` as a finite symmetric ``(d, d)`` matrix, and whether it was given as a scalar."""
    m = np.asarray(value, dtype=np.float64)
    scalar = m.ndim == 0
    if scalar:
        m = m.reshape(1, 1)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise UserError(f"{name} must be a scalar or a square (d, d) matrix, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        raise UserError(f"{name} must be finite")
    scale = float(np.abs(m).max()) if m.size else 0.0
    if not np.allclose(m, m.T, rtol=0.0, atol=1e-10 * scale):
        raise UserError(f"{name} must be symmetric")
    return 0.5 * (m + m.T), scalar


def _solve(H: ArrayLike, C: ArrayLike, temperature: float, lr: float) -> FloatArray | float:
    r"""Solve $H\Sigma + \Sigma H - lr\,H\Sigma H = T C$ in the eigenbasis of $H$."""
    h, h_scalar = _symmetric("H", H)
    c, c_scalar = _symmetric("C", C)
    if c.shape != h.shape:
        raise UserError(f"C must have the shape of H {h.shape}, got {c.shape}")
    require_positive("temperature", temperature)
    lam, vecs = np.linalg.eigh(h)
    if not lam[0] > 0:
        raise UserError(
            f"H must be positive definite (a strict minimum), got smallest eigenvalue {lam[0]:.3g}"
        )
    if lr * lam[-1] >= 2.0:
        raise UserError(
            f"unstable: lr * lambda_max = {lr * lam[-1]:.4g} >= 2, SGD diverges and has no "
            "stationary law; lower the learning rate"
        )
    c_eig = vecs.T @ c @ vecs
    denom = lam[:, None] + lam[None, :] - lr * lam[:, None] * lam[None, :]
    sigma = vecs @ (temperature * c_eig / denom) @ vecs.T
    sigma = 0.5 * (sigma + sigma.T)
    if h_scalar and c_scalar:
        return float(sigma[0, 0])
    return sigma


def lyapunov_continuous(H: ArrayLike, C: ArrayLike, temperature: float) -> FloatArray | float:
    r"""Stationary covariance of the linearized SDE: solve $H\Sigma + \Sigma H = T C$.

    Special cases: $C = \sigma^2 I$ gives $\Sigma = \tfrac{T\sigma^2}{2}H^{-1}$; $C = cH$ gives
    $\Sigma = \tfrac{Tc}{2}I$; always
    $\tfrac12\operatorname{tr}(H\Sigma) = \tfrac T4\operatorname{tr}C$.

    Args:
        H: symmetric positive definite Hessian, ``(d, d)`` or a scalar (1-D).
        C: symmetric gradient-noise covariance, same shape as ``H``.
        temperature: $T = \eta/B > 0$.

    Returns:
        $\Sigma$, ``(d, d)``; a float when both ``H`` and ``C`` are scalars.

    Raises:
        UserError: if ``H`` is not symmetric positive definite, ``C`` is not symmetric or not of
            ``H``'s shape, or $T \le 0$.

    Example:
        >>> lyapunov_continuous(2.0, 1.0, 0.04)  # T C / (2 h)
        0.01
        >>> lyapunov_continuous(np.diag([1.0, 4.0]), np.eye(2), 0.08)
        array([[0.04, 0.  ],
               [0.  , 0.01]])
    """
    return _solve(H, C, temperature, 0.0)


def lyapunov_discrete(
    H: ArrayLike, C: ArrayLike, temperature: float, lr: float
) -> FloatArray | float:
    r"""Exact stationary covariance of SGD on a quadratic: $H\Sigma+\Sigma H-\eta H\Sigma H=TC$.

    This is the fixed point of $\Sigma = (I-\eta H)\Sigma(I-\eta H) + \eta^2 C/B$ with
    $T = \eta/B$ (per-step noise covariance $C/B$). In 1-D,
    $\Sigma = \eta\sigma^2/(B\,h\,(2 - \eta h)) = T\sigma^2/(2h - \eta h^2)$. The $\eta H\Sigma H$
    term is what breaks temperature invariance at large $\eta\lambda$.

    Args:
        H: symmetric positive definite Hessian, ``(d, d)`` or a scalar (1-D).
        C: symmetric per-example gradient-noise covariance, same shape as ``H``.
        temperature: $T = \eta/B > 0$ (:func:`sgdtemp.theory.temperature`).
        lr: the learning rate $\eta > 0$.

    Returns:
        $\Sigma$, ``(d, d)``; a float when both ``H`` and ``C`` are scalars.

    Raises:
        UserError: as :func:`lyapunov_continuous`, on $\eta \le 0$, and when
            $\eta\lambda_{\max} \ge 2$ (SGD is unstable and has no stationary law).

    Example:
        >>> lyapunov_discrete(2.0, 1.0, 0.04, 0.5)  # T C / (2h - lr h^2) = 0.04 / 2
        0.02
    """
    require_positive("lr", lr)
    return _solve(H, C, temperature, lr)


def stationary_bias(H: ArrayLike, third: ArrayLike, Sigma: ArrayLike) -> FloatArray | float:
    r"""Stationary bias $b = -\tfrac12 H^{-1}(\nabla^3 L : \Sigma)$ of the mean from the minimum.

    Stationarity gives $\mathbb E[\nabla L(\theta)] = 0$; expanding to second order around the
    minimum, $Hb + \tfrac12\nabla^3L:\Sigma = 0$ with $(\nabla^3L:\Sigma)_i = \sum_{jk}
    T_{ijk}\Sigma_{jk}$. In 1-D with $\Sigma = TC/(2h)$ this is $b = -L'''\,TC/(4h^2)$.

    Args:
        H: symmetric positive definite Hessian at the minimum, ``(d, d)`` or a scalar.
        third: third-derivative tensor $T_{ijk} = \partial_i\partial_j\partial_k L$,
            ``(d, d, d)`` or a scalar.
        Sigma: stationary covariance, ``(d, d)`` or a scalar.

    Returns:
        $b$, ``(d,)``; a float when all inputs are scalars.

    Raises:
        UserError: on mismatched shapes or an ``H`` that is not symmetric positive definite.

    Example:
        >>> stationary_bias(1.0, 0.6, 0.01)  # -L''' T C / (4 h^2) with T C = 0.02
        -0.003
    """
    h, h_scalar = _symmetric("H", H)
    d = h.shape[0]
    t = np.asarray(third, dtype=np.float64)
    s = np.asarray(Sigma, dtype=np.float64)
    t_scalar, s_scalar = t.ndim == 0, s.ndim == 0
    t = t.reshape(1, 1, 1) if t_scalar else t
    s = s.reshape(1, 1) if s_scalar else s
    if t.shape != (d, d, d):
        raise UserError(f"third must have shape {(d, d, d)} to match H, got {t.shape}")
    if s.shape != (d, d):
        raise UserError(f"Sigma must have shape {(d, d)} to match H, got {s.shape}")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(s))):
        raise UserError("third and Sigma must be finite")
    if not np.linalg.eigvalsh(h)[0] > 0:
        raise UserError("H must be positive definite (a strict minimum)")
    bias = -0.5 * np.linalg.solve(h, np.einsum("ijk,jk->i", t, s))
    if h_scalar and t_scalar and s_scalar:
        return float(bias[0])
    return np.asarray(bias, dtype=np.float64)
