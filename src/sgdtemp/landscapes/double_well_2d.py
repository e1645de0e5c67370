r"""A 2-D tilted double well whose two basins differ in depth and in transverse curvature.

$$L(x, y) = (x^2 - 1)^2 + t\,x + \tfrac12\,e^{g x}\,y^2 ,$$

with tilt $t$ and curvature asymmetry $g$ (defaults $t = -0.1$, $g = 1.5$: the right basin is
deeper, and sharper in $y$ because $L_{yy} = e^{gx}$). Both basins are *asymmetric valleys* in
the sense of He, Huang & Yuan, "Asymmetric valleys: beyond sharp and flat local minima"
(NeurIPS 2019): the $x$ walls are quartic on the outside and soft towards the barrier, and the
$y$ walls steepen to the right, so a shift of the loss costs more on one side than the other.

Two noise models:

* :class:`DoubleWell2D` carries constant isotropic noise $C = \sigma^2 I$. Its Fokker–Planck
  stationary law is the Gibbs law $p_T \propto \exp(-2L/(T\sigma^2))$, a closed-form oracle.
* :class:`DoubleWell2DLoss` is a per-example loss with real minibatch noise,
  $\ell(\theta; a, \xi) = U(\theta - a) + \xi^\top\theta$, where $U$ is the formula above, $a$ a
  translation and $\xi$ a tilt (the 2-D analogue of the 1-D two-minima family). Translations give
  curvature-shaped noise $C \approx H\,\mathrm{Cov}(a)\,H$, which is anisotropic, state dependent
  and has off-diagonal terms wherever $L_{xy} = g e^{gx} y \neq 0$; tilts add $\mathrm{Cov}(\xi)$.
  With no translations and whitened tilts it reproduces :class:`DoubleWell2D` exactly.

Both are linear in a fixed set of nine features of $\theta$,
$\phi = (x^4, x^3, x^2, x, 1, e^{gx}y^2, e^{gx}y, e^{gx}, y)$, with per-example coefficients
$w_n$, so $L = \phi\cdot\bar w$, $\nabla\ell_n = (\partial\phi)^\top w_n$ and the population
covariance of the per-example gradients is exactly
$C(\theta) = (\partial\phi)^\top\,\mathrm{Cov}_n(w)\,(\partial\phi)$: evaluating $C$ costs
$O(9^2)$ per point, independent of $N$.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from sgdtemp.errors import UserError, require_positive
from sgdtemp.landscapes._base import AbstractLandscape, AbstractPerExampleLoss

__all__ = ["DoubleWell2D", "DoubleWell2DLoss", "double_well_2d_loss", "N_FEATURES"]

N_FEATURES = 9  # (x^4, x^3, x^2, x, 1, E y^2, E y, E, y) with E = exp(g x)


def _check_params(t: float, g: float) -> None:
    """Raise :class:`UserError` unless ``t`` and ``g`` are finite and give two minima."""
    for name, value in (("t", t), ("g", g)):
        if not math.isfinite(value):
            raise UserError(f"double-well-2d parameter {name} must be finite, got {value}")
    # 4x^3 - 4x + t has three real roots iff |t| < 8 / (3 sqrt 3).
    t_max = 8.0 / (3.0 * math.sqrt(3.0))
    if abs(t) >= t_max:
        raise UserError(
            f"double-well-2d parameter t={t} leaves a single minimum; use |t| < {t_max:.4f}"
        )
    if abs(g) > 10.0:
        raise UserError(
            f"double-well-2d parameter g={g} is too large (exp(g x) overflows); use |g| <= 10"
        )


def _critical_x(t: float) -> np.ndarray:
    """The three real roots of $4x^3 - 4x + t = 0$ (critical points on $y = 0$), increasing."""
    roots = np.roots([4.0, 0.0, -4.0, t])
    return np.sort(roots.real)


def _jacobian(theta: Tensor, g: float) -> Tensor:
    r"""Feature derivatives $(\partial_x\phi, \partial_y\phi)$, ``(..., 2) -> (..., 2, 9)``."""
    x, y = theta[..., 0], theta[..., 1]
    e = torch.exp(g * x)
    jac = torch.zeros(*x.shape, 2, N_FEATURES, dtype=theta.dtype, device=theta.device)
    jac[..., 0, 0] = 4 * x**3
    jac[..., 0, 1] = 3 * x**2
    jac[..., 0, 2] = 2 * x
    jac[..., 0, 3] = 1.0
    jac[..., 0, 5] = g * e * y**2
    jac[..., 0, 6] = g * e * y
    jac[..., 0, 7] = g * e
    jac[..., 1, 5] = 2 * e * y
    jac[..., 1, 6] = e
    jac[..., 1, 8] = 1.0
    return jac


def _features(theta: Tensor, g: float) -> Tensor:
    r"""Features $\phi(\theta)$, ``(..., 2) -> (..., 9)``."""
    x, y = theta[..., 0], theta[..., 1]
    e = torch.exp(g * x)
    return torch.stack([x**4, x**3, x**2, x, torch.ones_like(x), e * y**2, e * y, e, y], dim=-1)


def _feature_hessian(theta: Tensor, g: float) -> Tensor:
    r"""Second derivatives of the features, ``(..., 2) -> (..., 2, 2, 9)``."""
    x, y = theta[..., 0], theta[..., 1]
    e = torch.exp(g * x)
    hess = torch.zeros(*x.shape, 2, 2, N_FEATURES, dtype=theta.dtype, device=theta.device)
    hess[..., 0, 0, 0] = 12 * x**2
    hess[..., 0, 0, 1] = 6 * x
    hess[..., 0, 0, 2] = 2.0
    hess[..., 0, 0, 5] = g**2 * e * y**2
    hess[..., 0, 0, 6] = g**2 * e * y
    hess[..., 0, 0, 7] = g**2 * e
    hess[..., 0, 1, 5] = hess[..., 1, 0, 5] = 2 * g * e * y
    hess[..., 0, 1, 6] = hess[..., 1, 0, 6] = g * e
    hess[..., 1, 1, 5] = 2 * e
    return hess


def _coefficients(t: float, g: float, shift: Tensor, tilt: Tensor) -> Tensor:
    r"""Per-example feature coefficients $w_n$ of $U(\theta - a_n) + \xi_n^\top\theta$, ``(N, 9)``.

    Args:
        t: tilt parameter of $U$.
        g: curvature asymmetry of $U$.
        shift: translations $a_n$, ``(N, 2)``.
        tilt: tilts $\xi_n$, ``(N, 2)``.
    """
    a, b = shift[:, 0], shift[:, 1]
    ea = torch.exp(-g * a)
    one = torch.ones_like(a)
    return torch.stack(
        [
            one,  # x^4
            -4 * a,  # x^3
            6 * a**2 - 2,  # x^2
            -4 * a**3 + 4 * a + t + tilt[:, 0],  # x
            a**4 - 2 * a**2 + 1 - t * a,  # 1
            0.5 * ea,  # E y^2
            -ea * b,  # E y
            0.5 * ea * b**2,  # E
            tilt[:, 1],  # y
        ],
        dim=-1,
    )


class _FeatureLoss:
    r"""Loss, gradient and Hessian of $\phi(\theta)\cdot w$ for a mean coefficient vector."""

    g: float
    _w_mean: Tensor  # (9,)

    def _w(self, theta: Tensor) -> Tensor:
        return self._w_mean.to(dtype=theta.dtype, device=theta.device)

    def loss(self, theta: Tensor) -> Tensor:
        """Train loss, ``(..., 2) -> (...)``."""
        return _features(theta, self.g) @ self._w(theta)

    def grad(self, theta: Tensor) -> Tensor:
        """Gradient, ``(..., 2) -> (..., 2)``."""
        return _jacobian(theta, self.g) @ self._w(theta)

    def hessian(self, theta: Tensor) -> Tensor:
        """Hessian, ``(..., 2) -> (..., 2, 2)``."""
        return _feature_hessian(theta, self.g) @ self._w(theta)

    def _refine(self, guesses: np.ndarray) -> Tensor:
        """Newton-polish critical points from ``guesses`` ``(k, 2)``; float64 ``(k, 2)``."""
        theta = torch.as_tensor(guesses, dtype=torch.float64)
        for _ in range(50):
            step = torch.linalg.solve(self.hessian(theta), self.grad(theta).unsqueeze(-1))
            theta = theta - step.squeeze(-1)
            if float(step.abs().max()) < 1e-14:
                break
        return theta


class DoubleWell2D(AbstractLandscape):
    r"""$L = (x^2-1)^2 + tx + \tfrac12 e^{gx}y^2$ with constant isotropic noise $C = \sigma^2 I$.

    Args:
        t: tilt (default $-0.1$: the right basin is deeper), $|t| < 8/(3\sqrt3)$.
        g: curvature asymmetry (default $1.5$: the right basin is sharper in $y$).
        sigma: noise scale $\sigma > 0$ of $C = \sigma^2 I$.

    Raises:
        UserError: on parameters that are not finite, leave only one minimum or $\sigma \le 0$.

    Example:
        >>> land = DoubleWell2D()
        >>> land.minimizers() + 0.0
        tensor([[-0.9873,  0.0000],
                [ 1.0123,  0.0000]], dtype=torch.float64)
        >>> float(land.loss(land.minimizers()).argmin())  # the right basin is deeper
        1.0
    """

    name = "double-well-2d"
    dim = 2

    def __init__(self, t: float = -0.1, g: float = 1.5, *, sigma: float = 1.0) -> None:
        _check_params(t, g)
        require_positive("sigma", sigma)
        self.t, self.g, self.sigma = float(t), float(g), float(sigma)

    def loss(self, theta: Tensor) -> Tensor:
        """Train loss, ``(..., 2) -> (...)``."""
        x, y = theta[..., 0], theta[..., 1]
        return (x**2 - 1) ** 2 + self.t * x + 0.5 * torch.exp(self.g * x) * y**2

    def grad(self, theta: Tensor) -> Tensor:
        """Gradient, ``(..., 2) -> (..., 2)``."""
        x, y = theta[..., 0], theta[..., 1]
        e = torch.exp(self.g * x)
        gx = 4 * x * (x**2 - 1) + self.t + 0.5 * self.g * e * y**2
        return torch.stack([gx, e * y], dim=-1)

    def hessian(self, theta: Tensor) -> Tensor:
        """Hessian, ``(..., 2) -> (..., 2, 2)``."""
        x, y = theta[..., 0], theta[..., 1]
        e = torch.exp(self.g * x)
        hxx = 12 * x**2 - 4 + 0.5 * self.g**2 * e * y**2
        hxy = self.g * e * y
        return torch.stack([torch.stack([hxx, hxy], -1), torch.stack([hxy, e], -1)], -2)

    def noise_cov(self, theta: Tensor) -> Tensor:
        r"""$C = \sigma^2 I$ at every point, ``(..., 2) -> (..., 2, 2)``."""
        eye = torch.eye(2, dtype=theta.dtype, device=theta.device)
        return (self.sigma**2 * eye).expand(*theta.shape[:-1], 2, 2)

    def feature_model(self) -> tuple[float, np.ndarray, np.ndarray]:
        r"""``(g, w, Sigma)`` with $\nabla L = J w$ and $C = J\Sigma J^\top$ in the nine features.

        $J(\theta)$ ``(2, 9)`` is the feature Jacobian (module docstring); $w$ ``(9,)`` and
        $\Sigma$ ``(9, 9)`` are float64: the coefficients of $U$ and $\sigma^2$ on the two tilts.
        """
        w = np.array([1.0, 0.0, -2.0, self.t, 1.0, 0.5, 0.0, 0.0, 0.0])
        cov = np.zeros((N_FEATURES, N_FEATURES))
        cov[3, 3] = cov[8, 8] = self.sigma**2
        return self.g, w, cov

    def minimizers(self) -> Tensor:
        r"""The two minima $(x_\pm, 0)$, roots of $4x^3 - 4x + t$, ``(2, 2)`` float64."""
        xs = _critical_x(self.t)[[0, 2]]
        return torch.tensor([[x, 0.0] for x in xs], dtype=torch.float64)

    def saddles(self) -> Tensor:
        """The saddle $(x_0, 0)$ between the minima, ``(1, 2)`` float64."""
        return torch.tensor([[_critical_x(self.t)[1], 0.0]], dtype=torch.float64)


class DoubleWell2DLoss(_FeatureLoss, AbstractPerExampleLoss):
    r"""Per-example double well $\ell(\theta; a_n, \xi_n) = U(\theta - a_n) + \xi_n^\top\theta$.

    $U$ is the :class:`DoubleWell2D` formula. The train loss $L = \frac1N\sum_n\ell_n$ is a
    smoothed, tilted copy of $U$; its minimizers are found by Newton's method from $U$'s.
    Build one with random data through :func:`double_well_2d_loss`.

    Args:
        shift: translations $a_n$, ``(N, 2)``.
        tilt: tilts $\xi_n$, ``(N, 2)``.
        t: tilt parameter of $U$.
        g: curvature asymmetry of $U$.

    Raises:
        UserError: on malformed data or parameters, or if the data merge the two basins.
    """

    name = "double-well-2d-data"
    dim = 2

    def __init__(self, shift: Tensor, tilt: Tensor, *, t: float = -0.1, g: float = 1.5) -> None:
        _check_params(t, g)
        shift = torch.as_tensor(shift, dtype=torch.float64)
        tilt = torch.as_tensor(tilt, dtype=torch.float64)
        if shift.ndim != 2 or shift.shape[1] != 2 or tilt.shape != shift.shape:
            raise UserError(
                f"shift and tilt must both have shape (N, 2), got {tuple(shift.shape)} and "
                f"{tuple(tilt.shape)}"
            )
        if shift.shape[0] < 2:
            raise UserError(f"need at least 2 examples, got {shift.shape[0]}")
        if not (torch.isfinite(shift).all() and torch.isfinite(tilt).all()):
            raise UserError("shift and tilt data must be finite")
        self.t, self.g = float(t), float(g)
        self.shift, self.tilt = shift, tilt
        self.n_examples = int(shift.shape[0])
        self.coefficients = _coefficients(self.t, self.g, shift, tilt)  # (N, 9)
        self._w_mean = self.coefficients.mean(dim=0)
        centered = self.coefficients - self._w_mean
        self.coefficient_cov = centered.T @ centered / self.n_examples  # (9, 9), population
        self._minimizers = self._find_minima()

    def _find_minima(self) -> Tensor:
        guesses = np.array([[x, 0.0] for x in _critical_x(self.t)[[0, 2]]])
        theta = self._refine(guesses)
        ok = bool(torch.isfinite(theta).all()) and float(self.grad(theta).abs().max()) < 1e-8
        eig = torch.linalg.eigvalsh(self.hessian(theta)) if ok else None
        if (
            not ok
            or eig is None
            or bool((eig[:, 0] <= 0).any())
            or bool((theta[1] - theta[0]).norm() < 1e-3)
        ):
            raise UserError(
                "the data smear the double well into a single basin; use a smaller "
                "translation scale"
            )
        return theta[theta[:, 0].argsort()]

    def feature_model(self) -> tuple[float, np.ndarray, np.ndarray]:
        r"""``(g, w, Sigma)`` with $\nabla L = J w$ and $C = J\Sigma J^\top$ in the nine features.

        $w$ is the mean and $\Sigma$ the population covariance of the per-example coefficients
        (float64 arrays ``(9,)`` and ``(9, 9)``).
        """
        return self.g, self._w_mean.numpy().copy(), self.coefficient_cov.numpy().copy()

    def noise_cov(self, theta: Tensor) -> Tensor:
        """Exact population covariance of the per-example gradients, ``(..., 2, 2)``."""
        jac = _jacobian(theta, self.g)  # (..., 2, 9)
        cov = self.coefficient_cov.to(dtype=theta.dtype, device=theta.device)
        return jac @ cov @ jac.transpose(-1, -2)

    def minimizers(self) -> Tensor:
        """The two minima of the train loss (Newton from $U$'s), ``(2, 2)`` float64."""
        return self._minimizers.clone()

    def saddles(self) -> Tensor:
        """The saddle between the minima (Newton from $U$'s), ``(1, 2)`` float64."""
        return self._refine(np.array([[_critical_x(self.t)[1], 0.0]]))

    def _coef(self, theta: Tensor) -> Tensor:
        c = self.coefficients
        if c.dtype != theta.dtype or c.device != theta.device:
            c = c.to(dtype=theta.dtype, device=theta.device)
        return c

    def _grad_with(self, theta: Tensor, w: Tensor) -> Tensor:
        r"""$(\partial\phi)^\top w$ for ``w`` ``(chains, [B,] 9)``, ``-> (chains, [B,] 2)``."""
        extra = (slice(None),) + (None,) * (w.ndim - 2)
        x, y = theta[extra + (0,)], theta[extra + (1,)]
        e = torch.exp(self.g * x)
        c = w.unbind(-1)
        gx = ((4 * c[0] * x + 3 * c[1]) * x + 2 * c[2]) * x + c[3]
        gx = gx + self.g * e * ((c[5] * y + c[6]) * y + c[7])
        gy = e * (2 * c[5] * y + c[6]) + c[8]
        return torch.stack([gx, gy], dim=-1)

    def example_grads(self, theta: Tensor, idx: Tensor) -> Tensor:
        """Per-example gradients, ``(chains, 2), (chains, B) -> (chains, B, 2)``."""
        return self._grad_with(theta, self._coef(theta)[idx])

    def minibatch_grad(self, theta: Tensor, idx: Tensor) -> Tensor:
        """Mean gradient over each minibatch, fused: average the coefficients first."""
        return self._grad_with(theta, self._coef(theta)[idx].mean(dim=1))


def double_well_2d_loss(
    n_examples: int,
    *,
    t: float = -0.1,
    g: float = 1.5,
    translation_scale: float = 0.2,
    tilt_scale: float = 1.0,
    whiten: bool = True,
    generator: torch.Generator,
) -> DoubleWell2DLoss:
    r"""Draw a :class:`DoubleWell2DLoss` with Gaussian translations and tilts.

    $a_n \sim \mathcal N(0, s_a^2 I)$ and $\xi_n \sim \mathcal N(0, s_\xi^2 I)$, float64. With
    ``whiten`` the samples are affinely transformed so that their sample means are exactly 0 and
    the tilts' sample covariance is exactly $s_\xi^2 I$ (translations are only centered); then
    ``translation_scale=0`` gives $C \equiv s_\xi^2 I$ and the train loss is $U$ itself.

    Args:
        n_examples: number of examples $N \ge 3$.
        t: tilt parameter of $U$.
        g: curvature asymmetry of $U$.
        translation_scale: $s_a \ge 0$ (curvature-shaped, state-dependent noise).
        tilt_scale: $s_\xi \ge 0$ (isotropic, constant noise).
        whiten: center the data and whiten the tilts (see above).
        generator: source of randomness (CPU).

    Returns:
        The per-example loss.

    Raises:
        UserError: on negative scales, both scales zero, or fewer than 3 examples.

    Example:
        >>> gen = torch.Generator().manual_seed(0)
        >>> loss = double_well_2d_loss(256, translation_scale=0.0, tilt_scale=2.0, generator=gen)
        >>> loss.noise_cov(torch.zeros(2, dtype=torch.float64)).round(decimals=12) + 0.0
        tensor([[4., 0.],
                [0., 4.]], dtype=torch.float64)
    """
    if n_examples < 3:
        raise UserError(f"n_examples must be at least 3, got {n_examples}")
    for name, value in (("translation_scale", translation_scale), ("tilt_scale", tilt_scale)):
        if not (value >= 0 and math.isfinite(value)):
            raise UserError(f"{name} must be a finite number >= 0, got {value}")
    if translation_scale == 0 and tilt_scale == 0:
        raise UserError("translation_scale and tilt_scale are both 0: SGD would have no noise")
    shift = torch.randn(n_examples, 2, generator=generator, dtype=torch.float64)
    tilt = torch.randn(n_examples, 2, generator=generator, dtype=torch.float64)
    if whiten:
        shift = shift - shift.mean(dim=0)
        tilt = tilt - tilt.mean(dim=0)
        cov = tilt.T @ tilt / n_examples
        tilt = tilt @ torch.linalg.inv(torch.linalg.cholesky(cov)).T
    return DoubleWell2DLoss(translation_scale * shift, tilt_scale * tilt, t=t, g=g)
