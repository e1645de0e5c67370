r"""Abstract landscapes: a full-batch loss with analytic derivatives and a gradient-noise model.

A landscape maps parameters $\theta \in \mathbb R^d$, given as a tensor of shape ``(..., d)``, to
the train loss $L(\theta)$ of shape ``(...)``. It declares its own ground truth (gradient, Hessian,
minimizers and the per-example gradient covariance $C(\theta)$) so that simulations and
Fokker–Planck solvers can be checked against it. A per-example landscape additionally holds the
$N$ training examples, so that SGD can draw *real* minibatches from them.

Device and dtype follow the inputs; nothing here draws random numbers.
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor

__all__ = ["AbstractLandscape", "AbstractPerExampleLoss"]


class AbstractLandscape(abc.ABC):
    r"""A smooth loss $L:\mathbb R^d\to\mathbb R$ with its ground truth.

    Subclasses are final; they set ``name`` and ``dim`` and implement the abstract methods,
    all vectorized over leading batch dimensions.
    """

    name: str
    dim: int

    @abc.abstractmethod
    def loss(self, theta: Tensor) -> Tensor:
        """Train loss, ``(..., d) -> (...)``."""

    @abc.abstractmethod
    def grad(self, theta: Tensor) -> Tensor:
        """Gradient of the train loss, ``(..., d) -> (..., d)``."""

    @abc.abstractmethod
    def hessian(self, theta: Tensor) -> Tensor:
        """Hessian of the train loss, ``(..., d) -> (..., d, d)``."""

    @abc.abstractmethod
    def noise_cov(self, theta: Tensor) -> Tensor:
        r"""Per-example gradient covariance $C(\theta)$, ``(..., d, d)``.

        This is the noise of a single example's gradient; a minibatch of ``B`` examples has
        covariance ``C / B`` (times the without-replacement factor).
        """

    @abc.abstractmethod
    def minimizers(self) -> Tensor:
        """Local minimizers of the train loss, ``(k, d)``, sorted by their first coordinate."""


class AbstractPerExampleLoss(AbstractLandscape):
    r"""A train loss that is a mean of per-example losses, $L = \frac1N\sum_n \ell(\theta; z_n)$.

    ``noise_cov`` is then the population covariance of the per-example gradients,
    $C = \frac1N\sum_n \nabla\ell_n\nabla\ell_n^\top - \nabla L\nabla L^\top$.
    """

    n_examples: int

    @abc.abstractmethod
    def example_grads(self, theta: Tensor, idx: Tensor) -> Tensor:
        """Per-example gradients at each chain's own examples.

        Args:
            theta: parameters, ``(chains, d)``.
            idx: example indices, ``(chains, B)`` (int64).

        Returns:
            ``(chains, B, d)``: the gradient of example ``idx[c, b]`` at ``theta[c]``.
        """

    def minibatch_grad(self, theta: Tensor, idx: Tensor) -> Tensor:
        """Mean gradient over each chain's minibatch, ``(chains, d), (chains, B) -> (chains, d)``.

        Subclasses may override this with a fused computation; the result must not change.
        """
        return self.example_grads(theta, idx).mean(dim=1)

    def all_example_grads(self, theta: Tensor) -> Tensor:
        """Gradients of every example, ``(chains, d) -> (chains, N, d)`` (slow reference)."""
        idx = torch.arange(self.n_examples, device=theta.device).expand(theta.shape[0], -1)
        return self.example_grads(theta, idx)
