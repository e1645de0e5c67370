r"""Hessian quadratic forms $z^\top H z$ by second-order forward propagation (Taylor mode).

Along a direction $z$, the network output $f(\theta + tz)$ has derivatives $f' = Jz$ and
$f'' = \frac{d^2}{dt^2} f(\theta + tz)$ at $t = 0$, and

$$z^\top \nabla^2 L\, z = f'^\top\, \nabla^2_f\ell\; f' + \nabla_f\ell^\top f'' .$$

Propagating $(x, x', x'')$ forward through each layer needs no backward pass: a linear or
convolution layer $y = W x + b$ with parameter tangent $(V, c)$ gives
$y' = W x' + V x + c$ and $y'' = W x'' + 2 V x'$; ReLU and max pooling apply their (fixed) mask or
selection to $x'$ and $x''$. Per probe that is about four convolutions of the layer's size, against
six for a Hessian-vector product (forward and backward tangents) and nine for the classic
forward, backward and double backward; the primal pass is shared by all probes.

The model is traced with ``torch.fx``; every node must have a rule below (linear, convolution,
ReLU, max/average pooling, flatten, GroupNorm, residual additions, means over non-batch axes), else
:func:`taylor_program` returns None and callers use Hessian-vector products instead. Probes are
folded into the batch axis: a tangent of ``k`` probes has shape ``(k * N, ...)``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

__all__ = ["Jet", "TaylorProgram", "Unsupported", "taylor_program", "run_taylor"]

# (x, x', x''): the value and its first two derivatives along the probes; None means zero.
Jet = tuple[Tensor, Tensor | None, Tensor | None]


class Unsupported(Exception):
    """The model contains an operation without a Taylor rule."""


def _split(t: Tensor, k: int) -> Tensor:
    """``(k * N, ...) -> (k, N, ...)``."""
    return t.reshape(k, t.shape[0] // k, *t.shape[1:])


def _fold(t: Tensor) -> Tensor:
    """``(k, N, ...) -> (k * N, ...)``."""
    return t.reshape(t.shape[0] * t.shape[1], *t.shape[2:])


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _like(t: Tensor, ref: Tensor) -> Tensor:
    """Keep tangents in the primal's memory format (channels_last convolutions stay fast)."""
    if ref.dim() == 4 and ref.is_contiguous(memory_format=torch.channels_last):
        return t.contiguous(memory_format=torch.channels_last)
    return t


class _Ctx:
    """Per-call state: parameters, their tangents (``(k, *shape)``), the probe count and a memo.

    The memo holds each node's primal results (outputs, masks, pooling indices, normalization
    statistics) so that several chunks of probes on the same batch share one primal pass.
    """

    def __init__(
        self, params: dict[str, Tensor], tangents: dict[str, Tensor], k: int, memo: dict
    ) -> None:
        self.params = params
        self.tangents = tangents
        self.k = k
        self.memo = memo
        self.node = ""

    def primal(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` for the current node, computed once per batch."""
        if self.node not in self.memo:
            self.memo[self.node] = fn()
        return self.memo[self.node]

    def param(self, prefix: str, name: str) -> tuple[Tensor | None, Tensor | None]:
        key = f"{prefix}.{name}" if prefix else name
        return self.params.get(key), self.tangents.get(key)


# ---------------------------------------------------------------- module rules


def _affine(
    ctx: _Ctx, prefix: str, jet: Jet, apply: Callable[[Tensor, Tensor], Tensor], bias_shape: tuple
) -> Jet:
    """Rule for ``y = apply(x, W) + b`` with ``apply`` bilinear (linear layers, convolutions)."""
    x0, x1, x2 = jet
    k = ctx.k
    w, v = ctx.param(prefix, "weight")
    b, c = ctx.param(prefix, "bias")
    if w is None:
        raise Unsupported(f"{prefix}: weight is not a trainable parameter")
    y0 = ctx.primal(lambda: apply(x0, w) if b is None else apply(x0, w) + b.reshape(bias_shape))
    y1 = None if x1 is None else apply(x1, w)
    if v is not None:
        # all k weight tangents at once: stack them along the output axis
        vx = apply(x0, v.reshape(k * v.shape[1], *v.shape[2:]))  # (N, k * out, ...)
        vx = vx.reshape(vx.shape[0], k, v.shape[1], *vx.shape[2:]).transpose(0, 1)
        y1 = _add(y1, _fold(vx))
    if c is not None:
        shape = (k, 1, *bias_shape[1:])
        y1c = c.reshape(shape).expand(k, y0.shape[0], *y0.shape[1:])
        y1 = _add(y1, _fold(y1c))
    y2 = None if x2 is None else apply(x2, w)
    if v is not None and x1 is not None:
        x1s = _split(x1, k)
        cross = torch.stack([apply(x1s[j], v[j]) for j in range(k)])
        y2 = _add(y2, 2.0 * _fold(cross))
    return y0, None if y1 is None else _like(y1, y0), None if y2 is None else _like(y2, y0)


def _linear(ctx: _Ctx, prefix: str, mod: nn.Linear, jet: Jet) -> Jet:
    return _affine(ctx, prefix, jet, F.linear, (1, -1))


def _conv(ctx: _Ctx, prefix: str, mod: nn.Module, jet: Jet) -> Jet:
    conv = mod
    assert isinstance(conv, nn.Conv1d | nn.Conv2d)
    if conv.padding_mode != "zeros" or conv.groups != 1:
        raise Unsupported("only zero-padded, ungrouped convolutions")
    fn = F.conv1d if isinstance(conv, nn.Conv1d) else F.conv2d

    def apply(x: Tensor, w: Tensor) -> Tensor:
        return fn(x, w, None, conv.stride, conv.padding, conv.dilation)

    shape = (1, -1, 1) if isinstance(conv, nn.Conv1d) else (1, -1, 1, 1)
    return _affine(ctx, prefix, jet, apply, shape)


def _relu_jet(ctx: _Ctx, jet: Jet) -> Jet:
    x0, x1, x2 = jet
    mask, y0 = ctx.primal(lambda: (x0 > 0, torch.relu(x0)))

    def apply(t: Tensor | None) -> Tensor | None:
        return None if t is None else _like(_fold(_split(t, ctx.k) * mask), y0)

    return y0, apply(x1), apply(x2)


def _relu(ctx: _Ctx, prefix: str, mod: nn.Module, jet: Jet) -> Jet:
    return _relu_jet(ctx, jet)


def _maxpool(ctx: _Ctx, prefix: str, mod: nn.Module, jet: Jet) -> Jet:
    pool = mod
    assert isinstance(pool, nn.MaxPool2d)
    x0, x1, x2 = jet
    y0, idx = ctx.primal(
        lambda: F.max_pool2d(
            x0,
            pool.kernel_size,
            pool.stride,
            pool.padding,
            pool.dilation,
            ceil_mode=pool.ceil_mode,
            return_indices=True,
        )
    )
    flat_idx = idx.reshape(1, idx.shape[0], idx.shape[1], -1)

    def apply(t: Tensor | None) -> Tensor | None:
        if t is None:
            return None
        ts = _split(t, ctx.k)
        src = ts.reshape(*ts.shape[:3], -1)
        out = src.gather(3, flat_idx.expand(ctx.k, -1, -1, -1))
        return _like(_fold(out.reshape(ctx.k, *y0.shape)), y0)

    return y0, apply(x1), apply(x2)


def _linear_map(fn: Callable[[Tensor], Tensor]) -> Callable[[_Ctx, Jet], Jet]:
    """Rule for a fixed linear map applied along non-batch axes (pooling, flatten, ...)."""

    def rule(ctx: _Ctx, jet: Jet) -> Jet:
        x0, x1, x2 = jet
        y0 = ctx.primal(lambda: fn(x0))
        return y0, None if x1 is None else fn(x1), None if x2 is None else fn(x2)

    return rule


def _avgpool(ctx: _Ctx, prefix: str, mod: nn.Module, jet: Jet) -> Jet:
    return _linear_map(mod)(ctx, jet)


def _flatten_module(ctx: _Ctx, prefix: str, mod: nn.Module, jet: Jet) -> Jet:
    assert isinstance(mod, nn.Flatten)
    if mod.start_dim == 0 or mod.start_dim < -jet[0].dim() + 1:
        raise Unsupported("flatten over the batch axis")
    return _linear_map(mod)(ctx, jet)


def _identity(ctx: _Ctx, prefix: str, mod: nn.Module, jet: Jet) -> Jet:
    return jet


def _group_norm(ctx: _Ctx, prefix: str, mod: nn.Module, jet: Jet) -> Jet:
    r"""GroupNorm: $y = \gamma\hat x + \beta$ with $\hat x = u/\sigma$ per (example, group).

    $u = x - \bar x$ and $\sigma^2 = \overline{u^2} + \epsilon$; the rule differentiates this twice.
    """
    gn = mod
    assert isinstance(gn, nn.GroupNorm)
    x0, x1, x2 = jet
    k, g = ctx.k, gn.num_groups
    n = x0.shape[0]

    def stats() -> tuple[Tensor, Tensor, Tensor]:
        u = x0.reshape(n, g, -1)
        u = u - u.mean(dim=-1, keepdim=True)
        s = (u * u).mean(dim=-1, keepdim=True) + gn.eps
        return u, s, s.sqrt()

    u0, s0, sig = ctx.primal(stats)
    xh0 = u0 / sig
    zeros = torch.zeros_like(x0)
    x1s = _split(x1, k) if x1 is not None else zeros.unsqueeze(0).expand(k, *x0.shape)
    x2s = _split(x2, k) if x2 is not None else zeros.unsqueeze(0).expand(k, *x0.shape)
    u1 = x1s.reshape(k, n, g, -1)
    u1 = u1 - u1.mean(dim=-1, keepdim=True)
    u2 = x2s.reshape(k, n, g, -1)
    u2 = u2 - u2.mean(dim=-1, keepdim=True)
    s1 = 2 * (u0 * u1).mean(dim=-1, keepdim=True)
    s2 = 2 * (u1 * u1 + u0 * u2).mean(dim=-1, keepdim=True)
    sig1 = s1 / (2 * sig)
    sig2 = s2 / (2 * sig) - s1 * s1 / (4 * sig**3)
    xh1 = u1 / sig - u0 * sig1 / s0
    xh2 = u2 / sig - 2 * u1 * sig1 / s0 - u0 * sig2 / s0 + 2 * u0 * sig1 * sig1 / (s0 * sig)
    shape = (1, -1) + (1,) * (x0.dim() - 2)
    xh0 = xh0.reshape(x0.shape)
    xh1 = xh1.reshape(k, *x0.shape)
    xh2 = xh2.reshape(k, *x0.shape)
    w, v = ctx.param(prefix, "weight")
    b, c = ctx.param(prefix, "bias")
    gamma = w.reshape(shape) if w is not None else torch.ones((), dtype=x0.dtype)
    y0 = xh0 * gamma + (b.reshape(shape) if b is not None else 0.0)
    y1 = xh1 * gamma
    y2 = xh2 * gamma
    if v is not None:
        vg = v.reshape(k, 1, *shape[1:])
        y1 = y1 + xh0 * vg
        y2 = y2 + 2 * xh1 * vg
    if c is not None:
        y1 = y1 + c.reshape(k, 1, *shape[1:])
    return y0, _like(_fold(y1), y0), _like(_fold(y2), y0)


_MODULE_RULES: dict[type, Callable[[_Ctx, str, Any, Jet], Jet]] = {
    nn.Linear: _linear,
    nn.Conv1d: _conv,
    nn.Conv2d: _conv,
    nn.ReLU: _relu,
    nn.MaxPool2d: _maxpool,
    nn.AvgPool2d: _avgpool,
    nn.AdaptiveAvgPool2d: _avgpool,
    nn.Flatten: _flatten_module,
    nn.Identity: _identity,
    nn.Dropout: _identity,  # evaluated in eval mode
    nn.GroupNorm: _group_norm,
}


# ---------------------------------------------------------------- function and method rules


def _check_nonbatch_dims(dims: Any, ndim: int) -> None:
    for d in dims if isinstance(dims, tuple | list) else (dims,):
        if not isinstance(d, int) or d % ndim == 0:
            raise Unsupported("reduction over the batch axis")


def _call_rule(ctx: _Ctx, target: Any, args: tuple, kwargs: dict) -> Jet:
    """Rules for call_function and call_method nodes; ``args[0]`` is a jet."""
    jet = args[0]
    if target in (operator.add, torch.add, "add"):
        other = args[1]
        if isinstance(other, tuple):
            y0 = ctx.primal(lambda: jet[0] + other[0])
            return y0, _add(jet[1], other[1]), _add(jet[2], other[2])
        if isinstance(other, int | float):
            return ctx.primal(lambda: jet[0] + other), jet[1], jet[2]
        raise Unsupported("add with a tensor constant")
    if target in (torch.relu, F.relu, "relu"):
        return _relu_jet(ctx, jet)
    if target == "contiguous":
        fmt = kwargs.get("memory_format", torch.contiguous_format)
        return _linear_map(lambda t: t.contiguous(memory_format=fmt))(ctx, jet)
    if target in ("flatten", torch.flatten):
        start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
        end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
        if start % jet[0].dim() == 0:
            raise Unsupported("flatten over the batch axis")
        return _linear_map(lambda t: t.flatten(start, end))(ctx, jet)
    if target in ("mean", torch.mean):
        dims = args[1] if len(args) > 1 else kwargs.get("dim")
        if dims is None:
            raise Unsupported("mean over all axes")
        _check_nonbatch_dims(dims, jet[0].dim())
        keep = kwargs.get("keepdim", args[2] if len(args) > 2 else False)
        return _linear_map(lambda t: t.mean(dim=dims, keepdim=keep))(ctx, jet)
    raise Unsupported(f"no Taylor rule for {target}")


# ---------------------------------------------------------------- program


class TaylorProgram:
    """A traced model whose every node has a Taylor rule."""

    def __init__(self, graph_module: fx.GraphModule) -> None:
        self.gm = graph_module

    def __call__(
        self,
        params: dict[str, Tensor],
        tangents: dict[str, Tensor],
        x: Tensor,
        k: int,
        memo: dict,
    ) -> Jet:
        """Propagate ``(x, 0, 0)``; returns the output ``(f, f', f'')`` with ``k`` folded probes.

        ``memo`` carries the primal pass between calls on the same batch (start with ``{}``).
        """
        ctx = _Ctx(params, tangents, k, memo)
        env: dict[fx.Node, Any] = {}

        def load(a: Any) -> Any:
            return fx.node.map_arg(a, lambda n: env[n])

        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                env[node] = (x, None, None)
            elif node.op == "call_module":
                ctx.node = node.name
                mod = self.gm.get_submodule(node.target)
                (jet,) = load(node.args)
                env[node] = _MODULE_RULES[type(mod)](ctx, node.target, mod, jet)
            elif node.op in ("call_function", "call_method"):
                ctx.node = node.name
                env[node] = _call_rule(ctx, node.target, load(node.args), load(node.kwargs))
            elif node.op == "output":
                return load(node.args[0])
        raise Unsupported("graph without output")


def taylor_program(model: nn.Module) -> TaylorProgram | None:
    """Trace ``model`` with ``torch.fx``; None if tracing fails or a node has no rule.

    Function and method nodes are checked when first run (their rules depend on arguments);
    callers verify one quadratic form against a Hessian-vector product before relying on it.
    """
    try:
        gm = fx.symbolic_trace(model)
    except Exception:  # any tracing failure means: use Hessian-vector products
        return None
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            return None
        if node.op == "call_module":
            mod = gm.get_submodule(node.target)
            if type(mod) not in _MODULE_RULES:
                return None
            if len(node.args) != 1 or node.kwargs:
                return None
    if sum(node.op == "placeholder" for node in gm.graph.nodes) != 1:
        return None  # one input tensor only
    return TaylorProgram(gm)


def run_taylor(
    program: TaylorProgram,
    params: dict[str, Tensor],
    tangents: dict[str, Tensor],
    x: Tensor,
    y: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    memo: dict,
) -> Tensor:
    r"""Quadratic forms $z_j^\top \nabla^2\ell(\theta)\, z_j$ of one batch's loss, ``(k,)``.

    Args:
        program: the traced model.
        params: parameters by name.
        tangents: the probes by parameter name, each ``(k, *shape)``.
        x: inputs ``(N, ...)``.
        y: targets ``(N, ...)``.
        loss_fn: the batch loss of the outputs.
        memo: primal results shared by calls on the same batch (start with ``{}``).

    Raises:
        Unsupported: for an operation without a rule (found while running).
    """
    k = next(iter(tangents.values())).shape[0]
    with torch.no_grad():
        f0, f1, f2 = program(params, tangents, x, k, memo)
    out = f0.detach().requires_grad_()
    with torch.enable_grad():
        g = torch.autograd.grad(loss_fn(out, y), out, create_graph=True)[0]
    forms = torch.zeros(k, dtype=f0.dtype, device=f0.device)
    if f2 is not None:
        forms += (_split(f2, k) * g.detach()).flatten(1).sum(dim=1)
    if f1 is not None and g.requires_grad:
        f1s = _split(f1, k)
        for j in range(k):
            h = torch.autograd.grad(g, out, f1s[j], retain_graph=j < k - 1)[0]
            forms[j] += (h * f1s[j]).sum()
    return forms
