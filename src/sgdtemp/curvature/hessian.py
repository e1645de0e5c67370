r"""The Hessian of a model's mean loss as a matrix-free linear operator.

$$H = \nabla^2_\theta\,\frac1N\sum_b n_b\,\ell_b(\theta),$$

applied to vectors by automatic differentiation, never formed.
"""

from __future__ import annotations

from torch import Tensor

from sgdtemp.curvature._operator import AbstractModelOperator

__all__ = ["HessianOperator"]


class HessianOperator(AbstractModelOperator):
    r"""Hessian of the mean loss over ``batches`` w.r.t. all trainable parameters, as ``op @ v``.

    ``op @ v`` takes a flat vector ``(d,)`` or a matrix of columns ``(d, k)`` (parameters in
    ``model.named_parameters()`` order, trainable ones only) and returns the same shape. Each batch
    builds its gradient graph once for all ``k`` columns. The product is computed with
    ``torch.func`` as forward-over-reverse (``jvp(grad(L))``) or reverse-over-reverse (double
    backward), looped or ``vmap``-ed over the columns. The default, double backward looped over
    the columns, gives the same digits on every machine; ``hvp_mode="auto"`` and
    ``batching="auto"`` instead time the candidates on the first batch and keep the fastest that
    agrees with the others (see :attr:`strategy`), so their last digits can depend on the machine.
    The model is evaluated in eval mode; BatchNorm gets a warning.

    :meth:`quadratic_forms` gives $z_j^\top H z_j$ without forming $Hz_j$, by second-order
    forward (Taylor-mode) propagation when the model's layers allow it: about 4 layer-sized
    products per probe instead of 6, no backward pass, and a primal pass shared by all probes.
    The trace estimators use it.

    Args:
        model: the network (never modified).
        loss_fn: ``loss_fn(output, target) -> scalar``, averaging over its batch.
        batches: ``(x, y)`` tensors or an iterable of ``(x, y)`` batches.
        params: flat parameters ``(d,)`` at which to evaluate (default: the model's own).
        batch_size: split a single ``(x, y)`` pair into batches of this size.
        hvp_mode: ``"double_backward"`` (default), ``"forward_over_reverse"`` or ``"auto"``
            (timed).
        batching: ``"loop"`` (default), ``"vmap"`` or ``"auto"`` (timed) for several columns.
        max_columns: at most this many columns per ``vmap`` call or Taylor pass.
        taylor: allow Taylor-mode quadratic forms (:meth:`quadratic_forms`).
        graph_cache_bytes: memory for keeping each batch's gradient graph between products at
            the same parameters, so that a further product costs only the double backward
            (Lanczos, CG and several probes benefit); 0 disables it. Free it with
            :meth:`clear_cache`.
        mode: deprecated name of ``hvp_mode``.

    Example:
        >>> import torch
        >>> from sgdtemp.curvature import HessianOperator
        >>> model = torch.nn.Linear(2, 1)
        >>> gen = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(8, 2, generator=gen), torch.randn(8, 1, generator=gen)
        >>> H = HessianOperator(model, torch.nn.MSELoss(), (x, y))
        >>> H.shape
        (3, 3)
        >>> X = torch.cat([x, torch.ones(8, 1)], dim=1)  # least squares: H = 2 X^T X / N
        >>> torch.allclose(H.to_dense(), 2 * X.T @ X / 8, atol=1e-5)
        True
    """

    @property
    def strategy(self) -> dict[str, str]:
        """The product formulations chosen, as ``"mode:batching"``; filled on first use.

        Keys: ``"single"`` (one column) and ``"batched"`` (several columns).
        """
        return self.model_loss.strategy

    def _apply(self, rows: Tensor) -> Tensor:
        return self.model_loss.hvp(self.params, rows)

    def quadratic_forms(self, z: Tensor) -> Tensor:
        r"""$z_j^\top H z_j$ for the columns of ``z`` ``(d, m)``, as ``(m,)``.

        By second-order forward (Taylor-mode) propagation when every layer of the model has a
        rule, verified once against a Hessian-vector product; else by products. The trace
        estimators use this.
        """
        return self.model_loss.quadratic_forms(self.params, z.T).to(z.dtype)
