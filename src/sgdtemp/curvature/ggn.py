r"""The generalized Gauss–Newton matrix of a model's mean loss as a linear operator.

$$G = \frac1N\sum_b n_b\, J_b^\top\, \nabla^2_f \ell_b\, J_b, \qquad
  J_b = \partial f(x_b;\theta)/\partial\theta .$$

For convex losses in the network output (cross-entropy, squared error) $G$ is positive
semi-definite; it equals the Hessian when the network is linear in $\theta$, and differs from it by
the residual term $\sum_k \partial\ell/\partial f_k\,\nabla^2_\theta f_k$ otherwise.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.func import jvp, vjp, vmap

from sgdtemp.curvature._model import ModelLoss, eval_mode, load_forward_ad
from sgdtemp.curvature._operator import AbstractModelOperator

__all__ = ["GGNOperator", "ggn_products"]


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
        return ggn_products(self.model_loss, self.params, rows)


def ggn_products(loss: ModelLoss, theta: Tensor, tangents: Tensor) -> Tensor:
    r"""Generalized Gauss–Newton applied to the rows of ``tangents`` ``(k, d)``; ``(k, d)``.

    $G = \frac1N\sum_b n_b J_b^\top H_{\text{out},b} J_b$.

    $J v$ is forward mode (``vmap``-ed over rows when the model allows it), the output Hessian
    $H_\text{out}$ is applied by double backward through the loss alone (cheap: outputs are
    small), and $J^\top$ is reverse mode.
    """
    theta = loss._check_theta(theta)
    tangents = tangents.to(device=loss.device, dtype=loss.dtype)
    load_forward_ad()
    params = loss.unflatten(theta)
    rows = loss.unflatten(tangents)  # each (k, *shape)
    k = tangents.shape[0]
    out = torch.zeros_like(tangents)
    with eval_mode(loss.model):
        for w, (x, y) in zip(loss.weights, loss.batches):

            def fwd(p: dict[str, Tensor], x: Tensor = x) -> Tensor:
                return loss._forward(p, x)

            def push(v: dict[str, Tensor], fwd: Any = fwd) -> Tensor:
                return jvp(fwd, (params,), (v,))[1]

            output, vjp_fn = vjp(fwd, params)[:2]
            try:
                jv = vmap(push)(rows)  # (k, *output.shape)
            except (RuntimeError, NotImplementedError):
                jv = torch.stack([push({n: r[j] for n, r in rows.items()}) for j in range(k)])
            o = output.detach().requires_grad_()
            with torch.enable_grad():
                g_out = torch.autograd.grad(loss.loss_fn(o, y), o, create_graph=True)[0]
            if g_out.requires_grad:
                h_jv = torch.stack(
                    [
                        torch.autograd.grad(g_out, o, jv[j], retain_graph=j < k - 1)[0]
                        for j in range(k)
                    ]
                )
            else:  # loss linear in the output
                h_jv = torch.zeros_like(jv)

            def pull(u: Tensor, vjp_fn: Any = vjp_fn) -> Tensor:
                back = vjp_fn(u)[0]
                return torch.cat([back[n].reshape(-1) for n in loss.names])

            try:
                res = vmap(pull)(h_jv)
            except (RuntimeError, NotImplementedError):
                res = torch.stack([pull(u) for u in h_jv])
            out += w * res.detach()
    return out
