r"""K convolutional nets as one wide net: the models side by side along the channel axis.

K copies of a convolutional net (the reference CNN, the residual net) become one net whose
feature maps are ``(B, K*C, H, W)``: model k's channels are the block ``[k*C, (k+1)*C)``. Every
layer then runs once for all K models:

- a convolution is a *grouped* convolution (``groups = K * groups``, weights ``(K*O, C, kh, kw)``,
  the stacked parameter ``(K, O, C, kh, kw)`` viewed without a copy, channels_last as the
  models' own);
- a group norm is one group norm with ``K * G`` groups over ``K * C`` channels (each group is one
  model's group of one example, exactly as K separate group norms);
- ReLU, pooling, the residual sum and the global mean act per channel, so they need no change;
- a linear layer on flat features ``(B, K*F)`` is a batched product ``baddbmm``.

The nets' own ``forward`` methods run unchanged on the wide maps (:data:`PER_CHANNEL` lists the
containers whose ``forward`` only applies per-channel operations between its layers); only the
layers that own parameters are replaced. Gradients come from autograd, started from the
hand-computed gradient of the cross-entropy with respect to the logits (autograd's own cost is
~1 % of a step here, so a hand-written backward pass would not pay).

**Why grouped convolutions** (measured with ``benchmarks/bench_fused_cnn.py`` and per-layer
timings on this project's 2-core AMD EPYC VM, torch 2.13 CPU build, K = 12, B = 32, fp32, CPU
time, interleaved best of 3-5, with 6-15 other processes' load on the 2 CPUs). Forward plus
backward of the reference CNN's 3x3 convolutions of width 32, 12 models:

=============================  ============  =====================  ============  =============
one thread, ms                 12 separate   grouped, channels_last  grouped NCHW  unfold+baddbmm
=============================  ============  =====================  ============  =============
32->64 channels at 14x14       88.5          84.5                   91.7          237
64->128 channels at 7x7        80.4          81.8                   83.2          156
=============================  ============  =====================  ============  =============

Both run at ~95-100 GFLOP per CPU second, the fp32 matmul speed of the machine (85-92): the
convolutions are compute-bound, and stacking cannot make them faster; what stacking removes is the
per-layer overhead. Profile of one step of the 12 width-32 CNNs (torch.profiler, one thread, two
runs): the convolutions ran at 101-102 GFLOP per CPU second stacked against 110-120 as 12 separate
ones, everything else took 24-29 ms against 44-45 (of ~190 ms). Unfolded patches with ``baddbmm``
lose (the im2col copies and the narrow products), and ``torch.func.vmap``
(:class:`~sgdtemp.train.stacked.StackedFunctional`) runs the whole step at 0.72x of 12 plain ones
(layout copies; max pooling on maps that are not channels_last: 78 ms against 6). With two threads
on the loaded machine the grouped convolutions took 264 and 160 ms wall against 1039 and 346 for 12
separate ones: one parallel region per layer instead of K, each a barrier that waits for a
descheduled thread.

One training step of all 12 models, fused over 12 plain PyTorch steps (CPU time; the rule of
:func:`sgdtemp.train.multi.fused_path_applies` follows this table):

=====  ==========  ========  ========  ========  ========  ========
B      threads     width 4   width 8   width 16  width 32  width 64
=====  ==========  ========  ========  ========  ========  ========
8      1           3.70      2.71      1.66      1.18      0.97
32     1           1.87      1.41      1.00      0.97      0.87
128    1           1.17      0.88      0.78      0.77      0.79
32     2                     2.93      6.20      5.63      2.23
128    2                     2.98      3.14      2.48      1.29
=====  ==========  ========  ========  ========  ========  ========

On one thread, fused wins while a model's step is small (batch size x forward multiply-adds up to
~6e7: width 8 is 0.46 M per 28x28 image, width 32 7.3 M; a second run of the points around the
bound, load 12-14: width 32 at B = 8, 16, 32: 1.29, 1.07, 1.00; width 16 at B = 32, 64, 128: 1.14,
0.97, 0.79; width 8 at B = 32, 64, 128: 1.48, 1.15, 0.98) and loses up to ~20 % beyond, where the
K-wide feature maps outgrow the caches. Evaluation (forward only) follows the same pattern: the
wide net is 1.25x faster than one model at a time at width 8 and 0.86-0.91x at width 32 on one
thread, on par on two; :meth:`StackedConvNet.logits` picks accordingly
(:data:`EVAL_BY_MODEL_MACS`). End to end (``fit_many`` with its evaluations on the training set and
a test set, 1024 images each, one epoch, against ``fit`` 12 times): width-32 CNNs 0.92-1.02x by CPU
time on one thread (three runs), 2.3x by wall time on two; the GroupNorm residual net (width 16,
where GroupNorm takes 25-30 % of a step) 0.92x on one thread, 2.0x on two (load 8-21 on the 2
CPUs).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sgdtemp.train.models import PER_CHANNEL
from sgdtemp.train.stacked import AbstractStacked, cross_entropy_head, stacked_parameters

__all__ = [
    "EVAL_BY_MODEL_MACS",
    "EVAL_EXAMPLES",
    "EVAL_EXAMPLES_GPU",
    "StackedConvNet",
    "convnet_stackable",
    "forward_macs",
]

# Layers without parameters that act on each channel (or each flat feature) on its own.
_PASSIVE: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.Tanh,
    nn.Identity,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
)


class _Leaf(nn.Module):
    """A layer of K stacked models; its stacked tensors are bound before each pass."""

    def __init__(self) -> None:
        super().__init__()
        self.k = 1
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None


class _Conv(_Leaf):
    """K ``Conv2d`` as one grouped convolution; weight ``(K, O, C/g, kh, kw)``, bias ``(K, O)``."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.c_in, self.groups = conv.in_channels, conv.groups
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, K*C, H, W)``, or shared ``(n, C, H, W)``, to ``(n, K*O, H', W')``."""
        assert self.weight is not None
        w = self.weight  # (K, O, C/g, kh, kw)
        # (K*O, C/g, kh, kw) with the rows' strides (a view would reset those of size-1 axes,
        # and a channels_last weight with one input channel would lose its layout)
        weight = w.as_strided((w.shape[0] * w.shape[1], *w.shape[2:]), w.stride()[1:])
        bias = None if self.bias is None else self.bias.flatten()
        groups = self.k * self.groups
        if x.shape[1] == self.c_in and self.k > 1:  # one input for all K models
            if self.groups == 1:  # one convolution with K*O outputs
                groups = 1
            else:
                x = x.repeat(1, self.k, 1, 1)
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, groups)


class _GroupNorm(_Leaf):
    """K ``GroupNorm(G, C)`` as one ``GroupNorm(K*G, K*C)``; weight and bias ``(K, C)``."""

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.groups, self.channels, self.eps = norm.num_groups, norm.num_channels, norm.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, K*C, ...)``, or shared ``(n, C, ...)``, to ``(n, K*C, ...)``."""
        if x.shape[1] == self.channels and self.k > 1:
            x = x.repeat(1, self.k, *([1] * (x.ndim - 2)))
        weight = None if self.weight is None else self.weight.flatten()
        bias = None if self.bias is None else self.bias.flatten()
        return F.group_norm(x, self.k * self.groups, weight, bias, self.eps)


class _Linear(_Leaf):
    """K ``Linear`` on flat features ``(n, K*F)``; weight ``(K, O, F)``, bias ``(K, O)``."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features = linear.in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, K*F)``, or shared ``(n, F)``, to ``(n, K*O)``."""
        assert self.weight is not None and x.ndim == 2
        k, n_out, n_in = self.weight.shape
        if x.shape[1] == n_in and k > 1:  # shared input: one product with K*O outputs
            bias = None if self.bias is None else self.bias.flatten()
            return F.linear(x, self.weight.reshape(k * n_out, n_in), bias)
        h = x.view(x.shape[0], k, n_in).transpose(0, 1)  # (K, n, F)
        w_t = self.weight.transpose(1, 2)  # (K, F, O)
        if self.bias is None:
            out = torch.bmm(h, w_t)
        else:
            out = torch.baddbmm(self.bias.unsqueeze(1), h, w_t)
        return out.transpose(0, 1).reshape(x.shape[0], k * n_out)  # (n, K*O)


_LEAVES: dict[type[nn.Module], Callable[[Any], _Leaf]] = {
    nn.Conv2d: _Conv,
    nn.GroupNorm: _GroupNorm,
    nn.Linear: _Linear,
}


def _supported(module: nn.Module) -> bool:
    kind = type(module)
    if isinstance(module, nn.Conv2d) and kind is nn.Conv2d:
        return module.padding_mode == "zeros"
    if isinstance(module, nn.Flatten) and kind is nn.Flatten:
        return bool(module.start_dim == 1 and module.end_dim == -1)
    if kind in _LEAVES or kind in _PASSIVE:
        return True
    return (kind is nn.Sequential or kind in PER_CHANNEL) and not any(
        True for _ in module.parameters(recurse=False)
    )


def convnet_stackable(model: nn.Module) -> bool:
    """Whether ``model`` is built only of layers :class:`StackedConvNet` can run side by side.

    Example:
        >>> from sgdtemp.train.models import build_model
        >>> convnet_stackable(build_model("resnet", in_shape=(1, 8, 8), n_classes=2, width=4))
        True
        >>> convnet_stackable(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Softmax(dim=1)))
        False
    """
    return all(_supported(m) for m in model.modules())


# Examples per pass in evaluation, over the models of the pass together.
EVAL_EXAMPLES = 256
# The same on other devices (GPUs): a memory bound, not a measured optimum (no GPU was lent to
# measure one); 8192 examples of 12 width-32 CNNs hold ~0.8 GB of feature maps.
EVAL_EXAMPLES_GPU = 8192
# Forward multiply-adds per example of one model from which evaluation on one CPU thread runs
# model by model (the wide net is 1.25x faster at width 8, 0.5 M, and 0.86-0.97x from width 16,
# 1.8 M; on two threads it is 2.8x faster at width 8 and on par at width 32).
EVAL_BY_MODEL_MACS = 1_000_000


def forward_macs(model: nn.Module, in_shape: Sequence[int]) -> int:
    """Multiply-adds of the convolutions and linear layers of ``model`` for one input example.

    Computed from shapes alone (a forward pass on the ``meta`` device of a copy of the model).

    Args:
        model: the model.
        in_shape: shape of one input example, e.g. ``(C, H, W)``.

    Returns:
        The sum over ``Conv2d`` and ``Linear`` layers of outputs x inputs per output.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3))
        >>> forward_macs(net, (1, 4, 4))  # 2*2*2 outputs x 9 + 3 outputs x 8
        96
    """
    meta = copy.deepcopy(model).to("meta")
    total = 0

    def count(layer: nn.Module, inputs: Any, out: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(layer, nn.Conv2d | nn.Linear)
        total += out.numel() * layer.weight[0].numel()  # outputs x (C/g kh kw, or features)

    for layer in meta.modules():
        if isinstance(layer, nn.Conv2d | nn.Linear):
            layer.register_forward_hook(count)
    dtype = next((p.dtype for p in meta.parameters()), torch.get_default_dtype())
    with torch.no_grad():
        meta(torch.empty((1, *in_shape), dtype=dtype, device="meta"))
    return total


class StackedConvNet(AbstractStacked):
    """K convolutional nets of one architecture as one wide net (see the module docstring).

    Args:
        models: K models of one architecture (:func:`convnet_stackable`).
        device: where the stacked parameters live.
    """

    def __init__(self, models: Sequence[nn.Module], device: torch.device) -> None:
        self.names = [n for n, _ in models[0].named_parameters()]
        first = dict(models[0].named_parameters())
        # each model's row keeps the memory layout of its weights (channels_last convolution
        # weights stay channels_last, also where a size-1 axis makes the layout ambiguous)
        self._strides = [first[n].stride() for n in self.names]
        self.params = self._laid_out(stacked_parameters(models, self.names, device))
        self._arch = copy.deepcopy(models[0]).to("meta")  # shapes only
        net = copy.deepcopy(self._arch)
        index = {name: i for i, name in enumerate(self.names)}
        # (leaf, its weight's index in params or -1, its bias's index or -1)
        self._slots: list[tuple[_Leaf, int, int]] = []
        for path, module in list(net.named_modules()):
            leaf_type = _LEAVES.get(type(module))
            if leaf_type is None:
                continue
            leaf = leaf_type(module)
            parent, _, attr = path.rpartition(".")
            setattr(net.get_submodule(parent), attr, leaf)
            weight, bias = (index.get(f"{path}.{kind}", -1) for kind in ("weight", "bias"))
            self._slots.append((leaf, weight, bias))
        self._net = net.eval()
        self._macs: dict[tuple[int, ...], int] = {}  # input shape -> forward multiply-adds

    def _bind(self, params: Sequence[torch.Tensor]) -> None:
        k = int(params[0].shape[0])
        for leaf, weight, bias in self._slots:
            leaf.k = k
            leaf.weight = params[weight] if weight >= 0 else None
            leaf.bias = params[bias] if bias >= 0 else None

    def _forward(self, params: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """Logits ``(K, n, classes)`` of stacked ``(n, K*C, H, W)`` or shared inputs."""
        self._bind(params)
        try:
            out = self._net(x)  # (n, K*classes)
        finally:
            self._bind_none()
        k = int(params[0].shape[0])
        return out.view(out.shape[0], k, -1).transpose(0, 1)

    def _bind_none(self) -> None:
        for leaf, _, _ in self._slots:
            leaf.weight = leaf.bias = None

    def loss_and_grads(
        self, x: torch.Tensor, y: torch.Tensor, scale: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """See :meth:`AbstractStacked.loss_and_grads`."""
        k, b = int(x.shape[0]), int(x.shape[1])
        wide = x.transpose(0, 1).reshape(b, k * x.shape[2], *x.shape[3:])  # (B, K*C, H, W)
        leaves = [p.detach().requires_grad_() for p in self.params]
        with torch.enable_grad():
            logits = self._forward(leaves, wide)  # (K, B, classes)
            losses, grad = cross_entropy_head(logits.detach(), y, scale)
            grads = torch.autograd.grad(logits, leaves, grad)
        return losses, list(grads)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(K, n, C)`` of inputs ``(n, ...)`` shared by all K models (eval mode).

        On a CPU the wide net runs on chunks of ``EVAL_EXAMPLES // K`` examples (its feature
        maps are K times those of one model, and larger chunks outgrow the caches; elsewhere
        ``EVAL_EXAMPLES_GPU // K``); on one thread, nets of at least :data:`EVAL_BY_MODEL_MACS`
        multiply-adds per example run model by model instead, on chunks of ``EVAL_EXAMPLES``
        (their convolutions are compute-bound, and one model's run faster than a grouped one).
        """
        n, k = int(x.shape[0]), self.n_models
        shape = tuple(x.shape[1:])
        if shape not in self._macs:
            self._macs[shape] = forward_macs(self._arch, shape)
        one_thread = x.device.type == "cpu" and torch.get_num_threads() == 1
        if one_thread and self._macs[shape] >= EVAL_BY_MODEL_MACS:
            groups = [[p[i : i + 1] for p in self.params] for i in range(k)]
        else:
            groups = [self.params]
        per_pass = EVAL_EXAMPLES if x.device.type == "cpu" else EVAL_EXAMPLES_GPU
        chunk = max(1, per_pass // int(groups[0][0].shape[0]))
        return torch.cat(
            [
                torch.cat([self._forward(g, x[s : s + chunk]) for s in range(0, n, chunk)], dim=1)
                for g in groups
            ]
        )

    def keep(self, rows: Sequence[int]) -> None:
        """See :meth:`AbstractStacked.keep` (each model's weights keep their memory layout)."""
        super().keep(rows)
        self.params = self._laid_out(self.params)

    def _laid_out(self, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``params`` with each row ``p[k]`` in the memory layout of the models' weights."""
        out: list[torch.Tensor] = []
        for p, stride in zip(params, self._strides):
            row = p[0].numel()
            if p.stride() != (row, *stride):
                p = torch.empty_strided(p.shape, (row, *stride), dtype=p.dtype, device=p.device)
                p.copy_(params[len(out)])
            out.append(p)
        return out
