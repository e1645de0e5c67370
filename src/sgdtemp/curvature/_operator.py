"""Base class of the model curvature operators: flat-vector ``@`` over a :class:`ModelLoss`."""

from __future__ import annotations

import abc
import warnings
from typing import Any

import torch
from torch import Tensor

from sgdtemp.curvature._model import LossFn, ModelLoss
from sgdtemp.errors import UserError

__all__ = ["AbstractModelOperator"]


class AbstractModelOperator(abc.ABC):
    """A ``(d, d)`` operator defined by a model, a loss and data, at flat parameters ``params``.

    Subclasses implement :meth:`_apply` on rows ``(k, d) -> (k, d)``; this class handles vectors
    versus matrices of columns, dtype and device.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: LossFn,
        batches: Any,
        *,
        params: Tensor | None = None,
        batch_size: int | None = None,
        hvp_mode: str = "double_backward",
        batching: str = "loop",
        max_columns: int = 8,
        taylor: bool = True,
        graph_cache_bytes: int = 2**30,
        mode: str | None = None,
    ) -> None:
        if mode is not None:
            warnings.warn(
                "the mode= argument of the curvature operators is deprecated; pass hvp_mode=",
                DeprecationWarning,
                stacklevel=2,
            )
            hvp_mode = mode
        self.model_loss = ModelLoss(
            model,
            loss_fn,
            batches,
            batch_size=batch_size,
            hvp_mode=hvp_mode,
            batching=batching,
            max_columns=max_columns,
            taylor=taylor,
            graph_cache_bytes=graph_cache_bytes,
        )
        self.params = self.model_loss.flat_params() if params is None else params.detach()
        self._check()

    @classmethod
    def at(cls, model_loss: ModelLoss, params: Tensor) -> AbstractModelOperator:
        """The operator of an existing :class:`ModelLoss` at ``params`` ``(d,)``.

        It shares the loss's data and its calibrated product strategy.
        """
        op = cls.__new__(cls)
        op.model_loss = model_loss
        op.params = params.detach()
        op._check()
        return op

    def _check(self) -> None:
        d = self.model_loss.dim
        if self.params.shape != (d,):
            raise UserError(f"params must have shape ({d},), got {tuple(self.params.shape)}")
        self.params = self.params.to(device=self.model_loss.device, dtype=self.model_loss.dtype)

    @property
    def shape(self) -> tuple[int, int]:
        """``(d, d)`` with ``d`` the number of trainable parameters."""
        return (self.model_loss.dim, self.model_loss.dim)

    @property
    def dtype(self) -> torch.dtype:
        """The parameters' dtype."""
        return self.model_loss.dtype

    @property
    def device(self) -> torch.device:
        """The parameters' device."""
        return self.model_loss.device

    @abc.abstractmethod
    def _apply(self, rows: Tensor) -> Tensor:
        """Apply the operator to each row of ``rows`` ``(k, d)``; return ``(k, d)``."""

    def __matmul__(self, x: Tensor) -> Tensor:
        d = self.model_loss.dim
        if x.dim() not in (1, 2) or x.shape[0] != d:
            raise UserError(f"operand must have shape ({d},) or ({d}, k), got {tuple(x.shape)}")
        if x.dim() == 1:
            return self._apply(x.unsqueeze(0))[0].to(x.dtype)
        if x.shape[1] == 0:
            return torch.zeros_like(x)
        return self._apply(x.T.contiguous()).T.to(x.dtype)

    def clear_cache(self) -> None:
        """Free the gradient graphs kept between products (see ``graph_cache_bytes``)."""
        self.model_loss.clear_cache()

    def to_dense(self) -> Tensor:
        """The full ``(d, d)`` matrix (``d`` products: small models only)."""
        return self @ torch.eye(self.model_loss.dim, dtype=self.dtype, device=self.device)
