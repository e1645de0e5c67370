r"""The generalized Gauss–Newton matrix of a model's mean loss as a linear operator.

$$G = \frac1N\sum_b n_b\, J_b^\top\, \nabla^2_f \ell_b\, J_b, \qquad
  J_b = \partial f(x_b;\theta)/\partial\theta .$$

For convex losses in the network output (cross-entropy, squared error) $G$ is positive
semi-definite; it equals the Hessian when the network is linear in $\theta$, and differs from it by
the residual term $\sum_k \partial\ell/\partial f_k\,\nabla^2_\theta f_k$ otherwise.
"""

from __future__ import annotations

from torch import Tensor

from sgdtemp.curvature._operator import AbstractModelOperator

__all__ = ["GGNOperator"]


class GGNOperator(AbstractModelOperator):
    """Generalized Gauss–Newton of the mean loss over ``batches``, as ``op @ v``.

    Same arguments as :class:`~sgdtemp.curvature.HessianOperator` (``hvp_mode`` and ``batching`` are
    accepted but unused: the product is always ``J^T (H_out (J v))`` with a forward-mode ``J v``
    and a reverse-mode ``J^T``, ``vmap``-ed over columns when the model allows it).

    Example:
        >>> import torch
        >>> from sgdtemp.curvature import GGNOperator, HessianOperator
        >>> model = torch.nn.Linear(2, 1)
        >>> gen = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(8, 2, generator=gen), torch.randn(8, 1, generator=gen)
        >>> G = GGNOperator(model, torch.nn.MSELoss(), (x, y))
        >>> H = HessianOperator(model, torch.nn.MSELoss(), (x, y))
        >>> torch.allclose(G.to_dense(), H.to_dense(), atol=1e-5)  # linear model: G = H
        True
    """

    def _apply(self, rows: Tensor) -> Tensor:
        return self.model_loss.ggn_vp(self.params, rows)
