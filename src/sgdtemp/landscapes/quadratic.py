r"""A tilted quadratic with constant gradient noise: the Lyapunov and Ornstein–Uhlenbeck oracle.

Each example $n$ tilts a fixed quadratic,

$$\ell(\theta; \xi_n) = \tfrac12\theta^\top H\theta + \xi_n^\top\theta,\qquad
L(\theta) = \tfrac12\theta^\top H\theta + \bar\xi^\top\theta,$$

so every example has the same Hessian $H$, the minimizer is $-H^{-1}\bar\xi$ and the per-example
gradient covariance is the (population) covariance of the tilts, the same at every $\theta$. The
SDE $d\theta = -\nabla L\,dt + \sqrt{T C}\,dW$ is then an Ornstein–Uhlenbeck process with the
stationary covariance $\Sigma$ solving $H\Sigma + \Sigma H = TC$, and SGD is a linear recursion
whose stationary covariance is known exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sgdtemp.errors import UserError
from sgdtemp.landscapes._base import AbstractPerExampleLoss

__all__ = ["QuadraticLoss"]

# H must be symmetric to this relative tolerance.
_SYMMETRY_RTOL = 1e-10


class QuadraticLoss(AbstractPerExampleLoss):
    r"""$L(\theta) = \tfrac12\theta^\top H\theta + \bar\xi^\top\theta$ over $N$ tilted examples.

    Args:
        hessian: $H$, symmetric positive definite, ``(d, d)``.
        xi: the tilts $\xi_n$, ``(N, d)``, same dtype and device as ``hessian``.

    Raises:
        UserError: if ``hessian`` is not symmetric positive definite or shapes disagree.

    Attributes:
        H: the Hessian, ``(d, d)``.
        xi: the tilts, ``(N, d)``.

    Example:
        >>> H = torch.tensor([[2.0, 0.0], [0.0, 0.5]], dtype=torch.float64)
        >>> xi = torch.tensor([[1.0, 1.0], [3.0, -1.0]], dtype=torch.float64)
        >>> QuadraticLoss(H, xi).minimizers()
        tensor([[-1., -0.]], dtype=torch.float64)
    """

    name = "quadratic"

    def __init__(self, hessian: Tensor, xi: Tensor) -> None:
        if not isinstance(hessian, Tensor) or hessian.ndim != 2:
            raise UserError("hessian must be a (d, d) tensor")
        d = hessian.shape[0]
        if hessian.shape != (d, d) or d < 1 or not hessian.is_floating_point():
            raise UserError(f"hessian must be a square float tensor, got {tuple(hessian.shape)}")
        if not isinstance(xi, Tensor) or xi.ndim != 2 or xi.shape[1] != d or xi.shape[0] < 1:
            raise UserError(f"xi must be an (N, {d}) tensor with N >= 1")
        if xi.dtype != hessian.dtype or xi.device != hessian.device:
            raise UserError("xi must have the dtype and device of hessian")
        if not (bool(torch.isfinite(hessian).all()) and bool(torch.isfinite(xi).all())):
            raise UserError("hessian and xi must be finite")
        scale = float(hessian.abs().max())
        if float((hessian - hessian.T).abs().max()) > _SYMMETRY_RTOL * max(scale, 1e-300):
            raise UserError("hessian must be symmetric")
        if int(torch.linalg.cholesky_ex(hessian).info) != 0:
            raise UserError("hessian must be positive definite (a single minimum)")
        self.dim = d
        self.n_examples = int(xi.shape[0])
        self.H = hessian
        self.xi = xi
        self._xi_mean = xi.mean(dim=0)
        centered = xi - self._xi_mean
        self._cov = centered.T @ centered / self.n_examples

    def loss(self, theta: Tensor) -> Tensor:
        """Train loss, ``(..., d) -> (...)``."""
        h, m = self.H.to(theta.dtype), self._xi_mean.to(theta.dtype)
        return 0.5 * torch.einsum("...i,ij,...j->...", theta, h, theta) + theta @ m

    def grad(self, theta: Tensor) -> Tensor:
        r"""Gradient $H\theta + \bar\xi$, ``(..., d) -> (..., d)``."""
        return theta @ self.H.to(theta.dtype) + self._xi_mean.to(theta.dtype)

    def hessian(self, theta: Tensor) -> Tensor:
        """Hessian $H$ at every point, ``(..., d) -> (..., d, d)``."""
        return self.H.to(theta.dtype).expand(*theta.shape[:-1], self.dim, self.dim)

    def noise_cov(self, theta: Tensor) -> Tensor:
        """Population covariance of the tilts, the same at every point, ``(..., d, d)``."""
        return self._cov.to(theta.dtype).expand(*theta.shape[:-1], self.dim, self.dim)

    def minimizers(self) -> Tensor:
        r"""The minimizer $-H^{-1}\bar\xi$, ``(1, d)``."""
        return -torch.linalg.solve(self.H, self._xi_mean).unsqueeze(0)

    def example_grads(self, theta: Tensor, idx: Tensor) -> Tensor:
        r"""Per-example gradients $H\theta + \xi_n$, shapes ``(chains, B, d)``."""
        return (theta @ self.H).unsqueeze(1) + self.xi[idx]

    def minibatch_grad(self, theta: Tensor, idx: Tensor) -> Tensor:
        r"""Mean minibatch gradient $H\theta + \bar\xi_{\mathcal B}$, ``(chains, d)``."""
        chains, batch = idx.shape
        picked = self.xi.index_select(0, idx.reshape(-1)).view(chains, batch, self.dim)
        return theta @ self.H + picked.mean(dim=1)
