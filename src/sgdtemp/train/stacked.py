r"""K models of one architecture as one: parameters stacked along a leading model axis.

A :class:`AbstractStacked` holds K models' trainable parameters as tensors ``(K, *shape)`` and
computes, in one pass, each model's mean cross-entropy on *its own* minibatch with its
gradients (:meth:`~AbstractStacked.loss_and_grads`, inputs ``(K, B, ...)``) and the logits of
all K models on shared inputs (:meth:`~AbstractStacked.logits`, for evaluation). The training
loop of :func:`sgdtemp.train.fit_many` does the rest (per-model learning rate, weight decay,
momentum, stopping). :func:`stack_models` picks the implementation:

- :class:`StackedMLP`: plain MLPs (``Flatten``, ``Linear``, ``ReLU``/``Tanh``): ``baddbmm`` per
  layer and a hand-written backward pass (no autograd bookkeeping, which dominates small steps);
- :class:`~sgdtemp.train.stacked_conv.StackedConvNet`: the reference CNN and the residual net
  (GroupNorm included), as one wide net of grouped convolutions with autograd;
- :class:`StackedFunctional`: any other model without buffers (no BatchNorm), through
  ``torch.func.functional_call`` and ``vmap`` with autograd.

Models with buffers (BatchNorm running statistics) are not stacked: ``fit_many`` trains them one
after another.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

__all__ = [
    "AbstractStacked",
    "StackedMLP",
    "StackedFunctional",
    "stack_models",
    "stackable",
    "mlp_plan",
    "evaluate_stacked",
]

# Elementwise activations the stacked MLP understands: (function, backward from the output).
_ACTIVATIONS: dict[
    type[nn.Module], tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]
] = {
    nn.ReLU: (torch.relu, lambda grad, out: grad.masked_fill_(out <= 0, 0.0)),
    nn.Tanh: (torch.tanh, lambda grad, out: grad * (1 - out * out)),
    # softplus(z) = log(1 + e^z) has derivative sigmoid(z) = 1 - e^(-softplus(z)); above its
    # threshold (20) torch returns z itself, where 1 - e^(-z) is 1 to float precision
    nn.Softplus: (F.softplus, lambda grad, out: grad * -torch.expm1(-out)),
}


class AbstractStacked(abc.ABC):
    """K models of one architecture with their parameters stacked: ``params[i]`` is ``(K, ...)``.

    Attributes:
        names: the parameter names (``named_parameters`` order of one model).
        params: the stacked parameters, updated in place by the training loop.
    """

    names: list[str]
    params: list[torch.Tensor]

    @property
    def n_models(self) -> int:
        """K."""
        return int(self.params[0].shape[0])

    @abc.abstractmethod
    def loss_and_grads(
        self, x: torch.Tensor, y: torch.Tensor, scale: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Each model's mean cross-entropy on its own minibatch and its scaled gradients.

        Args:
            x: inputs ``(K, B, ...)``: model k's minibatch in row k.
            y: labels ``(K, B)``.
            scale: ``(K,)`` factors applied to model k's gradients (e.g. its learning rate).

        Returns:
            The losses ``(K,)`` and ``scale_k * d loss_k / d param`` for every parameter,
            shaped like :attr:`params`.
        """

    @abc.abstractmethod
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(K, n, C)`` of inputs ``(n, ...)`` shared by all K models (eval mode)."""

    @torch.no_grad()
    def sgd_step(self, x: torch.Tensor, y: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        """One plain SGD step of every model (no momentum, no weight decay), in place.

        Args:
            x: inputs ``(K, B, ...)``.
            y: labels ``(K, B)``.
            lr: ``(K,)`` learning rates (0 leaves a model as it is).

        Returns:
            The minibatch losses ``(K,)`` before the step.
        """
        losses, grads = self.loss_and_grads(x, y, lr)
        for p, g in zip(self.params, grads):
            p.sub_(g)
        return losses

    def state(self, k: int) -> dict[str, torch.Tensor]:
        """Model ``k``'s ``state_dict`` (CPU copies)."""
        return {n: p[k].detach().to("cpu", copy=True) for n, p in zip(self.names, self.params)}

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only the models ``rows`` (in that order), e.g. when others have stopped."""
        index = torch.as_tensor(list(rows), dtype=torch.long, device=self.params[0].device)
        self.params = [p.index_select(0, index) for p in self.params]


def stacked_parameters(
    models: Sequence[nn.Module], names: Sequence[str], device: Any
) -> list[torch.Tensor]:
    """The parameters ``names`` of K models, each stacked into one ``(K, *shape)`` tensor."""
    by_model = [dict(m.named_parameters()) for m in models]
    return [torch.stack([d[n].detach() for d in by_model]).to(device) for n in names]


def cross_entropy_head(
    logits: torch.Tensor, y: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each model's mean cross-entropy and ``scale_k * d loss_k / d logits``, by hand.

    Args:
        logits: ``(K, B, C)``.
        y: labels ``(K, B)``.
        scale: ``(K,)`` factors of the gradients.

    Returns:
        The losses ``(K,)`` and the scaled gradient ``(K, B, C)``:
        ``scale_k * (softmax - onehot) / B``.
    """
    log_p = torch.log_softmax(logits, dim=2)  # (K, B, C)
    target = y.unsqueeze(2)  # (K, B, 1)
    losses = -log_p.gather(2, target).squeeze(2).mean(dim=1)  # (K,)
    grad = log_p.exp_()
    grad.scatter_add_(2, target, torch.full_like(target, -1, dtype=grad.dtype))
    grad.mul_((scale / y.shape[1]).view(-1, 1, 1))
    return losses, grad


def mlp_plan(model: nn.Module) -> list[tuple[int, nn.Module]] | None:
    """``(index, layer)`` of a plain MLP's Linear/activation layers, or None if it is not one."""
    if type(model) is not nn.Sequential:
        return None
    layers = list(enumerate(model))
    if layers and isinstance(layers[0][1], nn.Flatten):
        flatten = layers[0][1]
        if flatten.start_dim != 1 or flatten.end_dim != -1:
            return None
        layers = layers[1:]
    if not layers or not any(type(m) is nn.Linear for _, m in layers):
        return None
    if any(type(m) is not nn.Linear and type(m) not in _ACTIVATIONS for _, m in layers):
        return None
    if any(type(m) is nn.Softplus and (m.beta != 1 or m.threshold != 20) for _, m in layers):
        return None  # the backward above is softplus' own at beta = 1
    return layers


class StackedMLP(AbstractStacked):
    """K MLPs of one architecture as stacked parameters ``(K, out, in)`` and ``(K, out)``.

    The training step is written out by hand (forward with ``baddbmm``, cross-entropy and its
    backward pass), which saves the autograd bookkeeping that dominates small steps.
    """

    def __init__(self, models: Sequence[nn.Module], device: torch.device) -> None:
        plan = mlp_plan(models[0])
        assert plan is not None
        # ("linear", weight index, bias index or -1) or ("act", function, backward)
        self.ops: list[tuple[str, Any, Any]] = []
        self.params: list[torch.Tensor] = []
        self.names: list[str] = []
        for index, layer in plan:
            if type(layer) is not nn.Linear:
                self.ops.append(("act", *_ACTIVATIONS[type(layer)]))
                continue
            bias = -1
            for kind in ("weight", "bias"):
                if getattr(layer, kind) is None:
                    continue
                name = f"{index}.{kind}"
                stacked = torch.stack([dict(m.named_parameters())[name] for m in models])
                if kind == "bias":
                    bias = len(self.params)
                self.params.append(stacked.detach().to(device))
                self.names.append(name)
            self.ops.append(("linear", len(self.params) - 1 - (bias >= 0), bias))

    def _linear(self, h: torch.Tensor, weight: int, bias: int) -> torch.Tensor:
        w = self.params[weight]  # (K, out, in)
        if h.ndim == 2:  # shared input, one matmul: (b, in) @ (in, K*out) -> (K, b, out)
            k, n_out, n_in = w.shape
            w_flat = w.reshape(k * n_out, n_in).T
            if bias < 0:
                out = h @ w_flat
            else:  # the bias added inside the matmul, not in a pass of its own
                out = torch.addmm(self.params[bias].reshape(-1), h, w_flat)
            return out.view(-1, k, n_out).transpose(0, 1)
        w_t = w.transpose(1, 2)  # (K, in, out)
        if bias < 0:
            return torch.bmm(h, w_t)
        return torch.baddbmm(self.params[bias].unsqueeze(1), h, w_t)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(K, n, C)`` of inputs ``(n, ...)`` shared by all K models (one matmul each)."""
        h = x.flatten(1)
        for kind, a, b in self.ops:
            h = self._linear(h, a, b) if kind == "linear" else a(h)
        return h

    @torch.no_grad()
    def loss_and_grads(
        self, x: torch.Tensor, y: torch.Tensor, scale: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Mean cross-entropy of each model ``(K,)`` and its gradients times ``scale``.

        Args:
            x: inputs ``(K, B, D)`` (model k's minibatch in row k).
            y: labels ``(K, B)``.
            scale: ``(K,)`` factors applied to model k's gradients (its learning rate: scaling
                the small ``(K, B, C)`` logit gradient is cheaper than scaling every update).

        Returns:
            The losses ``(K,)`` and ``scale_k * d loss_k / d param`` for every parameter.
        """
        saved, grad, losses, first_linear = self._forward_backward_head(x.flatten(2), y, scale)
        grads: list[torch.Tensor] = [torch.empty(0)] * len(self.params)
        for i in range(len(self.ops) - 1, first_linear - 1, -1):
            kind, a, b = self.ops[i]
            if kind == "act":
                grad = b(grad, saved[i])
                continue
            grads[a] = torch.bmm(grad.transpose(1, 2), saved[i])  # (K, out, in)
            if b >= 0:
                grads[b] = grad.sum(dim=1)  # (K, out)
            if i > first_linear:
                grad = torch.bmm(grad, self.params[a])  # (K, B, in)
        return losses, grads

    @torch.no_grad()
    def sgd_step(self, x: torch.Tensor, y: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        """One plain SGD step of every model (no momentum, no weight decay), in place.

        The update is folded into the weight-gradient products: ``W.baddbmm_(-lr g^T, h)``
        computes ``W - lr * dL/dW`` without materialising the gradient (one pass over each
        weight instead of three), and each layer's input gradient is taken before its weights
        change.

        Args:
            x: inputs ``(K, B, D)`` (model k's minibatch in row k).
            y: labels ``(K, B)``.
            lr: ``(K,)`` learning rates (0 for a stopped run: its weights stay as they are).

        Returns:
            The minibatch losses ``(K,)`` before the step.
        """
        saved, grad, losses, first_linear = self._forward_backward_head(x.flatten(2), y, lr)
        for i in range(len(self.ops) - 1, first_linear - 1, -1):
            kind, a, b = self.ops[i]
            if kind == "act":
                grad = b(grad, saved[i])
                continue
            upstream = torch.bmm(grad, self.params[a]) if i > first_linear else None
            self.params[a].baddbmm_(grad.transpose(1, 2), saved[i], alpha=-1.0)
            if b >= 0:
                self.params[b].sub_(grad.sum(dim=1))
            if upstream is not None:
                grad = upstream
        return losses

    def _forward_backward_head(
        self, x: torch.Tensor, y: torch.Tensor, scale: torch.Tensor
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, int]:
        """Forward pass; saved inputs/outputs, ``scale * dL/dlogits``, losses, first linear op."""
        saved: list[torch.Tensor] = []  # input of each linear op, output of each activation
        h = x
        for kind, a, b in self.ops:
            if kind == "linear":
                saved.append(h)
                h = self._linear(h, a, b)
            else:
                h = a(h)
                saved.append(h)
        losses, grad = cross_entropy_head(h, y, scale)
        first_linear = next(i for i, op in enumerate(self.ops) if op[0] == "linear")
        return saved, grad, losses, first_linear


class StackedFunctional(AbstractStacked):
    """Any model without buffers, stacked through ``torch.func.functional_call`` and ``vmap``.

    The forward pass of the K models is one ``vmap`` of the model's own ``forward`` over the
    stacked parameters and inputs (PyTorch turns a batched convolution into a grouped one, a
    batched linear layer into a batched matrix product); gradients come from one reverse pass
    of the summed, scaled losses (the models share no parameter, so each gets its own gradient).
    """

    def __init__(self, models: Sequence[nn.Module], device: torch.device) -> None:
        self.names = [n for n, p in models[0].named_parameters()]
        self.params = stacked_parameters(models, self.names, device)
        self._base = copy.deepcopy(models[0]).to("meta").eval()

    def _call(self, params: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self._base, dict(zip(self.names, params)), (x,))

    def _loss(
        self, params: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        return F.cross_entropy(self._call(params, x), y)

    def loss_and_grads(
        self, x: torch.Tensor, y: torch.Tensor, scale: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """See :meth:`AbstractStacked.loss_and_grads`."""
        leaves = [p.detach().requires_grad_() for p in self.params]
        with torch.enable_grad():
            losses = vmap(self._loss)(leaves, x, y)  # (K,)
            grads = torch.autograd.grad((losses * scale).sum(), leaves)
        return losses.detach(), list(grads)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """See :meth:`AbstractStacked.logits`."""
        return vmap(self._call, in_dims=(0, None))(self.params, x)


# Layers whose functional form fails under ``vmap`` in PyTorch (2.13: ``group_norm`` queries the
# channels_last layout, which ``vmap`` does not support); models of the layers that
# :class:`~sgdtemp.train.stacked_conv.StackedConvNet` knows (GroupNorm included) do not need it.
_UNVMAPPABLE = (nn.GroupNorm,)


def stackable(model: nn.Module) -> bool:
    """Whether copies of ``model`` can be stacked.

    A model can be stacked when it has no buffers (BatchNorm's running statistics), all its
    parameters are trainable, and it is a plain MLP, a net of the layers
    :class:`~sgdtemp.train.stacked_conv.StackedConvNet` knows (the reference CNN, the residual
    net), or a model whose every layer runs under ``vmap``.

    Example:
        >>> stackable(nn.Sequential(nn.Linear(2, 2))), stackable(nn.BatchNorm1d(2))
        (True, False)
    """
    # imported here: stacked_conv builds on this module
    from sgdtemp.train.stacked_conv import convnet_stackable

    if any(True for _ in model.buffers()) or not all(p.requires_grad for p in model.parameters()):
        return False
    if mlp_plan(model) is not None or convnet_stackable(model):
        return True
    return not any(isinstance(m, _UNVMAPPABLE) for m in model.modules())


def stack_models(models: Sequence[nn.Module], device: torch.device) -> AbstractStacked:
    """K models of one architecture as one :class:`AbstractStacked` on ``device``.

    Plain MLPs get :class:`StackedMLP`, convolutional nets of known layers
    :class:`~sgdtemp.train.stacked_conv.StackedConvNet`, other models :class:`StackedFunctional`.

    Raises:
        ValueError: if the models cannot be stacked (see :func:`stackable`).
    """
    from sgdtemp.train.stacked_conv import StackedConvNet, convnet_stackable

    if not stackable(models[0]):
        raise ValueError("models with buffers (BatchNorm) or frozen parameters cannot be stacked")
    if mlp_plan(models[0]) is not None:
        return StackedMLP(models, device)
    if convnet_stackable(models[0]):
        return StackedConvNet(models, device)
    return StackedFunctional(models, device)


def evaluate_stacked(
    stacked: AbstractStacked, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> list[dict[str, float]]:
    """Full-pass mean cross-entropy and accuracy of each of the K models on shared data."""
    n, k = int(y.shape[0]), stacked.n_models
    loss = torch.zeros(k, dtype=torch.float64, device=x.device)
    correct = torch.zeros(k, dtype=torch.int64, device=x.device)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            logits = stacked.logits(xb)  # (K, b, C)
            per = F.cross_entropy(logits.flatten(0, 1), yb.repeat(k), reduction="none").view(k, -1)
            loss += per.sum(dim=1).double()
            correct += (logits.argmax(dim=2) == yb).sum(dim=1)
    return [{"loss": lo / n, "acc": c / n} for lo, c in zip(loss.tolist(), correct.tolist())]
