r"""A model's mean loss over a fixed data set as a function of one flat parameter vector.

:class:`ModelLoss` is the plumbing under every model operator: it flattens the trainable
parameters of an ``nn.Module`` into one vector $\theta \in \mathbb R^d$ (in ``named_parameters``
order), evaluates

$$L(\theta) = \frac1N \sum_{b} n_b\, \ell_b(\theta), \qquad
\ell_b = \texttt{loss\_fn}(f(x_b; \theta), y_b)$$

over the batches $b$ (``loss_fn`` must average over its batch, like ``nn.CrossEntropyLoss()``),
its gradient, Hessian-vector products and per-example gradients, all through
``torch.func.functional_call``: the module's own parameters are never written to.

The model is evaluated in eval mode (its ``training`` flags are restored afterwards), so dropout is
off and BatchNorm uses its running statistics; a model with BatchNorm gets a warning because that
Hessian is not the one of the loss SGD sees.

Hessian-vector products have two formulations, reverse-over-reverse (``"double_backward"``) and
forward-over-reverse (``"forward_over_reverse"``, ``jvp(grad(L))``), and two ways to apply them to
several columns: a Python loop that reuses one gradient graph (``"loop"``) or ``vmap`` over the
tangents (``"vmap"``). Which is fastest depends on the model (BackPACK and curvlinops measured
opposite winners). The default is double backward looped over the columns, the same on every
machine; ``"auto"`` (opt-in) times the candidates on the first batch of the first call, keeps only
those whose result agrees with a trusted reference, and records the choice in
:attr:`ModelLoss.strategy` (the choice, hence the last digits, can then differ between machines).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vmap

from sgdtemp.curvature._calibrate import (
    BATCHINGS,
    FAILURES,
    HVP_MODES,
    calibrate,
    check_deadline,
    trusted_strategy,
)
from sgdtemp.curvature._taylor import TaylorProgram, Unsupported, run_taylor, taylor_program
from sgdtemp.errors import UserError

__all__ = ["Batch", "ModelLoss", "as_batches", "HVP_MODES", "BATCHINGS"]

Batch = tuple[Tensor, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]

# Largest per-example-gradient block (examples x parameters) held at once.
_MAX_PER_EXAMPLE_ELEMENTS = 2**25


def as_batches(data: Any, *, batch_size: int | None = None) -> list[Batch]:
    """Normalize data to a list of ``(x, y)`` batches.

    Args:
        data: a pair of tensors ``(x, y)`` with ``x`` of shape ``(N, ...)`` and ``y`` of shape
            ``(N, ...)``, or an iterable of such pairs (a list of batches, a ``DataLoader``).
        batch_size: split a single pair into batches of this many examples (default: one batch).
            Ignored for an iterable of batches.

    Returns:
        The list of batches (views of the input, no copies).

    Raises:
        UserError: on empty data, mismatched lengths or a non-positive batch size.

    Example:
        >>> x, y = torch.zeros(5, 2), torch.zeros(5)
        >>> [b[0].shape[0] for b in as_batches((x, y), batch_size=2)]
        [2, 2, 1]
    """
    if isinstance(data, tuple | list) and len(data) == 2 and isinstance(data[0], Tensor):
        x, y = data
        if not isinstance(y, Tensor):
            raise UserError("data must be (x, y) tensors or an iterable of (x, y) batches")
        if x.shape[0] != y.shape[0]:
            raise UserError(f"x has {x.shape[0]} examples but y has {y.shape[0]}")
        n = int(x.shape[0])
        if n == 0:
            raise UserError("the data set is empty; pass at least one example")
        size = n if batch_size is None else int(batch_size)
        if size <= 0:
            raise UserError(f"batch_size must be positive, got {batch_size}")
        batches = [(x[i : i + size], y[i : i + size]) for i in range(0, n, size)]
    else:
        batches = []
        for item in data:
            if not (isinstance(item, tuple | list) and len(item) >= 2):
                raise UserError("each batch must be a pair (x, y) of tensors")
            bx, by = item[0], item[1]
            if bx.shape[0] != by.shape[0]:
                raise UserError(f"a batch has {bx.shape[0]} inputs but {by.shape[0]} targets")
            batches.append((bx, by))
    batches = [b for b in batches if b[0].shape[0] > 0]
    if not batches:
        raise UserError("the data set is empty; pass at least one example")
    return batches


def load_forward_ad() -> None:
    """Import torch's forward-AD decompositions once, silencing torch's own deprecation notice.

    The first forward-mode product in a process scripts these decompositions with
    ``torch.jit.script``, which warns on recent torch; the import is cached afterwards.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import torch._decomp.decompositions_for_jvp  # noqa: F401


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode for the duration of the block, then restore the flags."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.train(False)
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class ModelLoss:
    r"""Mean loss of ``model`` over ``batches`` as a function of the flat trainable parameters.

    Args:
        model: the network; its trainable parameters (``requires_grad``) define $\theta$. It is
            never modified.
        loss_fn: ``loss_fn(output, target) -> scalar``, averaging over the batch.
        batches: ``(x, y)`` tensors or an iterable of ``(x, y)`` batches (see :func:`as_batches`).
            Floating inputs are cast to the parameters' dtype and device.
        batch_size: split a single ``(x, y)`` pair into batches of this size.
        hvp_mode: ``"double_backward"`` (default), ``"forward_over_reverse"``, or ``"auto"``
            to time them (opt-in: the choice, hence the last digits, can depend on the machine).
        batching: how several columns are handled: ``"loop"`` (default), ``"vmap"`` or
            ``"auto"`` (timed, like ``hvp_mode``).
        max_columns: at most this many columns go through one ``vmap`` call or one Taylor pass
            (memory bound).
        taylor: compute Hessian quadratic forms $z^\top H z$ by second-order forward propagation
            when every layer of the model has a rule (see :mod:`sgdtemp.curvature._taylor`);
            otherwise, or with False, from Hessian-vector products.
        graph_cache_bytes: memory for keeping the batches' gradient graphs between products at
            the same parameters (Lanczos, CG and probes reuse them: a further double-backward
            product then skips the forward and backward pass). 0 disables the cache.

    Raises:
        UserError: on a model without trainable parameters, empty data or an unknown mode.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        batches: Any,
        *,
        batch_size: int | None = None,
        hvp_mode: str = "double_backward",
        batching: str = "loop",
        max_columns: int = 8,
        taylor: bool = True,
        graph_cache_bytes: int = 2**30,
    ) -> None:
        if hvp_mode not in ("auto", *HVP_MODES):
            raise UserError(f"hvp_mode must be 'auto' or one of {HVP_MODES}, got {hvp_mode!r}")
        if batching not in ("auto", *BATCHINGS):
            raise UserError(f"batching must be 'auto' or one of {BATCHINGS}, got {batching!r}")
        if max_columns < 1:
            raise UserError(f"max_columns must be positive, got {max_columns}")
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise UserError("the model has no trainable parameters (requires_grad)")
        if _has_batchnorm(model):
            warnings.warn(
                "the model has BatchNorm: curvature is evaluated in eval mode (running "
                "statistics), which is not the loss that SGD with batch statistics sees",
                UserWarning,
                stacklevel=3,
            )
        self.model = model
        self.loss_fn = loss_fn
        self.names = [n for n, _ in named]
        self.shapes = [tuple(p.shape) for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.dim = sum(self.numels)
        self.dtype = named[0][1].dtype
        self.device = named[0][1].device
        self.batches = [self._cast(b) for b in as_batches(batches, batch_size=batch_size)]
        self.num_examples = sum(int(b[0].shape[0]) for b in self.batches)
        self.weights = [b[0].shape[0] / self.num_examples for b in self.batches]
        self.hvp_mode = hvp_mode
        self.batching = batching
        self.max_columns = int(max_columns)
        self.strategy: dict[str, str] = {}
        self.calibration: dict[str, dict[str, float]] = {}
        self.taylor = bool(taylor)
        self._program: TaylorProgram | None = None
        self._taylor_checked = False
        self._taylor_chunk = self.max_columns
        self.graph_cache_bytes = int(graph_cache_bytes)
        self._graphs: dict[int, tuple[list[Tensor], list[Tensor], list[int]]] = {}
        self._graph_bytes = 0
        self._graph_theta: Tensor | None = None

    # ------------------------------------------------------------------ plumbing

    def _cast(self, batch: Batch) -> Batch:
        x, y = batch
        if x.is_floating_point():
            x = x.to(device=self.device, dtype=self.dtype)
        else:
            x = x.to(device=self.device)
        if y.is_floating_point():
            y = y.to(device=self.device, dtype=self.dtype)
        else:
            y = y.to(device=self.device)
        return x, y

    def flat_params(self) -> Tensor:
        """A detached copy of the model's current trainable parameters, ``(d,)``."""
        params = dict(self.model.named_parameters())
        return torch.cat([params[n].detach().reshape(-1) for n in self.names]).clone()

    def unflatten(self, vec: Tensor) -> dict[str, Tensor]:
        """Split ``(d,)`` into parameter-shaped views, or ``(k, d)`` into ``(k, *shape)`` views."""
        lead = vec.shape[:-1]
        chunks = torch.split(vec, self.numels, dim=-1)
        return {n: c.reshape(*lead, *s) for n, c, s in zip(self.names, chunks, self.shapes)}

    def flatten(self, tensors: Sequence[Tensor], *, batched: bool = False) -> Tensor:
        """Concatenate parameter-shaped tensors into ``(d,)`` (or ``(k, d)`` when ``batched``)."""
        if batched:
            return torch.cat([t.reshape(t.shape[0], -1) for t in tensors], dim=1)
        return torch.cat([t.reshape(-1) for t in tensors])

    def _forward(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(self.model, params, (x,))

    def _batch_loss(self, params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return self.loss_fn(self._forward(params, x), y)

    def _check_theta(self, theta: Tensor) -> Tensor:
        if theta.shape != (self.dim,):
            raise UserError(
                f"parameter vector must have shape ({self.dim},), got {tuple(theta.shape)}"
            )
        return theta.detach().to(device=self.device, dtype=self.dtype)

    # ------------------------------------------------------------------ values and gradients

    def loss(self, theta: Tensor) -> float:
        r"""$L(\theta)$ as a Python float."""
        params = self.unflatten(self._check_theta(theta))
        total = 0.0
        with eval_mode(self.model), torch.no_grad():
            for w, (x, y) in zip(self.weights, self.batches):
                total += w * float(self._batch_loss(params, x, y))
        return total

    def value_and_grad(self, theta: Tensor) -> tuple[float, Tensor]:
        r"""$L(\theta)$ and $\nabla L(\theta)$, ``(d,)``."""
        theta = self._check_theta(theta)
        leaves = [t.requires_grad_() for t in (v.clone() for v in self.unflatten(theta).values())]
        total = 0.0
        acc = torch.zeros_like(theta)
        with eval_mode(self.model), torch.enable_grad():
            for w, (x, y) in zip(self.weights, self.batches):
                loss = self._batch_loss(dict(zip(self.names, leaves)), x, y)
                grads = torch.autograd.grad(loss, leaves, allow_unused=True, materialize_grads=True)
                acc += w * self.flatten(grads)
                total += w * float(loss.detach())
        return total, acc

    # ------------------------------------------------------------------ Hessian-vector products

    def _gradient_graph(
        self, theta: Tensor, x: Tensor, y: Tensor
    ) -> tuple[list[Tensor], list[Tensor], list[int], bool]:
        """The batch's gradient with ``create_graph``, built or taken from the cache.

        Returns the leaves, the live gradients, their indices and whether the graph is cached
        (kept for further products at the same ``theta``). Graphs are cached per batch while
        their saved tensors fit in ``graph_cache_bytes``; a new ``theta`` drops them all. A
        further product then costs only the double backward.
        """
        key = id(x)
        same = self._graph_theta is not None and torch.equal(self._graph_theta, theta)
        if same and key in self._graphs:
            return (*self._graphs[key], True)
        if not same:
            self.clear_cache()
        leaves = [t.clone().requires_grad_() for t in self.unflatten(theta).values()]
        # The graph's size, estimated from the layers' outputs (forward hooks only read their
        # sizes): what the backward passes save is about the activations, twice. Not a
        # saved-tensors hook: one that returns the tensor it packs makes every saved output a
        # reference cycle through C++ that Python's collector cannot free (a leak of the whole
        # graph per ModelLoss: 0.27 GB for a 784-128-10 MLP on 4000 images).
        saved = [x.numel() * x.element_size()]

        def count(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, Tensor):
                saved[0] += 2 * output.numel() * output.element_size()

        hooks = [
            m.register_forward_hook(count)
            for m in self.model.modules()
            if next(m.children(), None) is None
        ]
        try:
            with torch.enable_grad():
                loss = self._batch_loss(dict(zip(self.names, leaves)), x, y)
                grads = torch.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
        finally:
            for hook in hooks:
                hook.remove()
        live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        outputs = [grads[i] for i in live]
        size = saved[0] + sum(o.numel() * o.element_size() for o in outputs)
        if self._graph_bytes + size <= self.graph_cache_bytes:
            self._graphs[key] = (leaves, outputs, live)
            self._graph_bytes += size
            self._graph_theta = theta.clone()
            return leaves, outputs, live, True
        return leaves, outputs, live, False

    def clear_cache(self) -> None:
        """Drop cached gradient graphs (they are also dropped when ``theta`` changes)."""
        self._graphs.clear()
        self._graph_bytes = 0
        self._graph_theta = None

    def _hvp_double_backward(
        self,
        theta: Tensor,
        x: Tensor,
        y: Tensor,
        tangents: Tensor,
        vectorize: bool,
        deadline: float,
    ) -> Tensor:
        leaves, outputs, live, cached = self._gradient_graph(theta, x, y)
        out = torch.zeros_like(tangents)
        if not live:
            return out  # the gradient does not depend on the parameters: zero Hessian
        vs = list(self.unflatten(tangents).values())  # each (k, *shape)
        k = tangents.shape[0]
        if vectorize:
            res = torch.autograd.grad(
                outputs,
                leaves,
                [vs[i] for i in live],
                is_grads_batched=True,
                retain_graph=cached,
                allow_unused=True,
                materialize_grads=True,
            )
            return self.flatten([r.detach() for r in res], batched=True)
        for j in range(k):
            res = torch.autograd.grad(
                outputs,
                leaves,
                [vs[i][j] for i in live],
                retain_graph=cached or j < k - 1,
                allow_unused=True,
                materialize_grads=True,
            )
            out[j] = self.flatten([r.detach() for r in res])
            check_deadline(deadline)
        return out

    def _hvp_forward_over_reverse(
        self,
        theta: Tensor,
        x: Tensor,
        y: Tensor,
        tangents: Tensor,
        vectorize: bool,
        deadline: float,
    ) -> Tensor:
        load_forward_ad()
        params = self.unflatten(theta)

        def loss_of(p: dict[str, Tensor]) -> Tensor:
            return self._batch_loss(p, x, y)

        def one(v: dict[str, Tensor]) -> Tensor:
            hv = jvp(grad(loss_of), (params,), (v,))[1]
            return torch.cat([hv[n].reshape(-1) for n in self.names])

        if vectorize:
            return vmap(one)(self.unflatten(tangents))
        out = torch.zeros_like(tangents)
        for j in range(tangents.shape[0]):
            out[j] = one(self.unflatten(tangents[j]))
            check_deadline(deadline)
        return out

    def _hvp_batch(
        self,
        strategy: str,
        theta: Tensor,
        x: Tensor,
        y: Tensor,
        tangents: Tensor,
        deadline: float = math.inf,
    ) -> Tensor:
        mode, _, batching = strategy.partition(":")
        fn = (
            self._hvp_double_backward
            if mode == "double_backward"
            else self._hvp_forward_over_reverse
        )
        if batching == "loop":
            return fn(theta, x, y, tangents, False, deadline)
        parts = []
        for chunk in torch.split(tangents, self.max_columns):
            parts.append(fn(theta, x, y, chunk, True, deadline))
            check_deadline(deadline)
        return torch.cat(parts)

    def value_and_grad_batch(self, theta: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """Gradient of one batch's loss, ``(d,)`` (used as a warm-up and by benchmarks)."""
        leaves = [t.clone().requires_grad_() for t in self.unflatten(theta).values()]
        with eval_mode(self.model), torch.enable_grad():
            loss = self._batch_loss(dict(zip(self.names, leaves)), x, y)
            grads = torch.autograd.grad(loss, leaves, allow_unused=True, materialize_grads=True)
        return self.flatten(grads)

    def hvp(self, theta: Tensor, tangents: Tensor) -> Tensor:
        r"""Hessian of $L$ at ``theta`` applied to the rows of ``tangents``.

        Args:
            theta: parameters, ``(d,)``.
            tangents: ``(k, d)``, one tangent per row.

        Returns:
            ``(k, d)``: row ``j`` is $\nabla^2 L(\theta)\, t_j$.
        """
        theta = self._check_theta(theta)
        tangents = tangents.to(device=self.device, dtype=self.dtype)
        kind = "single" if tangents.shape[0] == 1 else "batched"
        out = torch.zeros_like(tangents)
        with eval_mode(self.model):
            start = 0
            if kind not in self.strategy:
                out += self.weights[0] * calibrate(self, kind, theta, tangents)
                start = 1
            strategy = self.strategy[kind]
            for w, (x, y) in list(zip(self.weights, self.batches))[start:]:
                out += w * self._hvp_batch(strategy, theta, x, y, tangents)
        return out

    # ------------------------------------------------------------------ quadratic forms

    def _taylor_forms(
        self,
        theta: Tensor,
        x: Tensor,
        y: Tensor,
        tangents: Tensor,
        memo: dict | None = None,
    ) -> Tensor:
        assert self._program is not None
        if tangents.shape[0] == 0:
            return tangents.new_zeros(0)
        params = self.unflatten(theta)
        memo = {} if memo is None else memo
        parts = [
            run_taylor(self._program, params, self.unflatten(chunk), x, y, self.loss_fn, memo)
            for chunk in torch.split(tangents, self._taylor_chunk)
        ]
        return torch.cat(parts)

    def _check_taylor(self, theta: Tensor, tangents: Tensor) -> Tensor | None:
        """Set up Taylor mode on the first batch; return its forms, or None to use products.

        Traces the model, verifies one Taylor quadratic form against a Hessian-vector product and
        chooses how many probes share one forward pass.

        Probes folded into the batch axis make large matrix products (fast for dense layers) but
        also large feature maps (slow for convolutions on a CPU), so one probe alone and two
        folded probes are timed on the first batch (after the shared primal pass); if folding
        pays, ``max_columns`` probes share each pass.
        """
        self._taylor_checked = True
        self._program = taylor_program(self.model) if self.taylor else None
        if self._program is None:
            return None
        x, y = self.batches[0]
        memo: dict = {}
        k = tangents.shape[0]
        try:
            self._taylor_chunk = 1
            parts = [self._taylor_forms(theta, x, y, tangents[:1], memo)]  # primal pass too
            done = 1
            if k >= 4 and self.max_columns >= 2:
                start = time.perf_counter()
                parts.append(self._taylor_forms(theta, x, y, tangents[1:2], memo))
                single = time.perf_counter() - start
                self._taylor_chunk = 2
                start = time.perf_counter()
                parts.append(self._taylor_forms(theta, x, y, tangents[2:4], memo))
                per_probe = (time.perf_counter() - start) / 2
                self._taylor_chunk = self.max_columns if per_probe < single else 1
                self.calibration["taylor"] = {"1": single, "2": per_probe}
                done = 4
            parts.append(self._taylor_forms(theta, x, y, tangents[done:], memo))
            forms = torch.cat(parts)
            hz = self._hvp_batch(trusted_strategy(self), theta, x, y, tangents[:1])[0]
        except (Unsupported, *FAILURES):
            self._program = None
            return None
        exact = float((tangents[0] * hz).sum())
        scale = float((tangents[0] ** 2).sum()) * float(hz.abs().max()) + 1e-30
        tol = 10.0 * torch.finfo(self.dtype).eps ** 0.5
        if abs(float(forms[0]) - exact) > tol * scale:
            self._program = None  # disagrees with the Hessian-vector product: never use it
            return None
        return forms

    def quadratic_forms(self, theta: Tensor, tangents: Tensor) -> Tensor:
        r"""Quadratic forms $t_j^\top \nabla^2 L(\theta)\, t_j$ of the rows of ``tangents``.

        Args:
            theta: parameters, ``(d,)``.
            tangents: ``(k, d)``.

        Returns:
            ``(k,)``. By Taylor-mode forward propagation when the model allows it (about two
            thirds of the work of a Hessian-vector product per row, and no backward pass), else
            from Hessian-vector products.
        """
        theta = self._check_theta(theta)
        tangents = tangents.to(device=self.device, dtype=self.dtype)
        with eval_mode(self.model):
            start = 0
            out = torch.zeros(tangents.shape[0], dtype=self.dtype, device=self.device)
            if not self._taylor_checked:
                first = self._check_taylor(theta, tangents)
                if first is not None:
                    out += self.weights[0] * first
                    start = 1
            if self._program is None:
                return (tangents * self.hvp(theta, tangents)).sum(dim=1)
            for w, (x, y) in list(zip(self.weights, self.batches))[start:]:
                out += w * self._taylor_forms(theta, x, y, tangents)
        return out

    @property
    def uses_taylor(self) -> bool | None:
        """Whether quadratic forms use Taylor mode (None until the first call decides)."""
        return None if not self._taylor_checked else self._program is not None

    # ------------------------------------------------------------------ per-example gradients

    def per_example_grads(self, theta: Tensor) -> Iterator[Tensor]:
        r"""Per-example gradients $\nabla\ell_n(\theta)$, in blocks ``(n_block, d)`` in order."""
        theta = self._check_theta(theta)
        params = self.unflatten(theta)

        def example_loss(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
            return self.loss_fn(self._forward(p, xi.unsqueeze(0)), yi.unsqueeze(0))

        per_example = vmap(grad(example_loss), in_dims=(None, 0, 0))
        block = max(1, _MAX_PER_EXAMPLE_ELEMENTS // self.dim)
        with eval_mode(self.model):
            for x, y in self.batches:
                for i in range(0, x.shape[0], block):
                    g = per_example(params, x[i : i + block], y[i : i + block])
                    yield torch.cat([g[n].reshape(g[n].shape[0], -1) for n in self.names], dim=1)

    def iter_batches(self) -> Iterable[tuple[float, Batch]]:
        """``(weight, batch)`` pairs, with weights $n_b/N$."""
        return zip(self.weights, self.batches)
