r"""Train K configurations of one small model at once: ``fit_many``.

K runs that share the data and the batch size but differ in learning rate and/or seed are
trained in one process. Each run keeps everything :func:`~sgdtemp.train.trainer.fit` would
give it: its initial weights come from ``model_factory(torch.Generator().manual_seed(seed))``
and its data order from its own generator seeded with ``seed``, so run ``k`` sees exactly the
minibatches ``fit(model_factory(...), train, seed=seeds[k], lr=lrs[k], ...)`` sees.

**When the batched path is used (the rule).** A plain MLP (``nn.Sequential`` of an optional
``Flatten``, ``Linear`` layers and ``ReLU``/``Tanh``) is trained *fused* when K >= 2 and the
work of one model's step, ``batch_size * n_params`` multiply-adds, is at most
:data:`FUSED_MAX_WORK` (1e7). The K weight matrices of each layer are stacked to
``(K, out, in)``; one ``baddbmm`` per layer runs the K forward passes, a hand-written backward
pass (cross-entropy, ``bmm``, activation masks; no autograd bookkeeping) the K backward passes,
and one batched update all K SGD steps; for plain SGD (no momentum, no weight decay) the update
is folded into the weight-gradient product, ``W.baddbmm_(-lr g^T, h)``, so the gradient is never
materialised. Minibatches are gathered into the same buffers every step. Measured with
``benchmarks/bench_multi.py`` on this project's 2-core CPU (load average about 1.5): for K = 8
MLPs 784-64-10 at B = 32 the training steps run 4.1x (1 thread) to 6.4x (2 threads) faster than
8 plain PyTorch loops one after another, 3.0x to 4.8x with the per-epoch evaluation (which is
matmul-bound on both sides, so it bounds the gain). Before those two changes, at 2.6e7
multiply-adds per step (784-64-10 at B = 512, 784-256-10 at B = 128) fused and sequential broke
even, and above that the fused path lost (the rule's bound dates from then). Everything else
(convolutional networks, BatchNorm, larger MLPs, K = 1) runs the K configurations one after
another with ``fit``: measured on this project, generic
``torch.func.vmap`` over ``grad`` gains only ~1.2x over sequential runs for small models and
nothing for larger ones, so it is not worth a second code path.

**How identical the results are.** The sequential path *is* ``fit``: bit-identical. The fused
path does the same arithmetic in a different order (batched matrix products instead of K single
ones, the learning rate applied to the logit gradient instead of to each update), so the results
agree with ``fit`` up to floating-point rounding: in ``float64`` to ~1e-15 relative after
hundreds of steps, in ``float32`` to ~1e-7 absolute in the weights after an epoch (rounding
differences of ~1e-7 per step, fed back through training, can grow over long runs). The tests
check float64 to ``rtol=1e-9`` and float32 to ``atol=1e-4``; the fused path itself is
deterministic (the same inputs give bit-identical results).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sgdtemp.errors import UserError
from sgdtemp.theory.temperature import temperature
from sgdtemp.train.trainer import (
    CHECK_EVERY,
    Data,
    Progress,
    TrainResult,
    _bound,
    _check_int,
    _divergence,
    _epoch_order,
    _float_dtype,
    _setup,
    _sync,
    epoch_record,
    fit,
)

__all__ = ["FUSED_MAX_WORK", "fit_many", "fused_path_applies"]

# Largest per-model work per step (batch_size * parameters, in multiply-adds) trained fused.
FUSED_MAX_WORK = 10_000_000
# Examples per evaluation chunk on the fused path.
FUSED_EVAL_BATCH_SIZE = 1024
# Elementwise activations the fused MLP path understands: (function, backward from the output).
_ACTIVATIONS: dict[
    type[nn.Module], tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]
] = {
    nn.ReLU: (torch.relu, lambda grad, out: grad.masked_fill_(out <= 0, 0.0)),
    nn.Tanh: (torch.tanh, lambda grad, out: grad * (1 - out * out)),
}

ModelFactory = Callable[[torch.Generator], nn.Module]


def _mlp_plan(model: nn.Module) -> list[tuple[int, nn.Module]] | None:
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
    return layers


def fused_path_applies(model: nn.Module, *, batch_size: int, n_models: int) -> bool:
    """Whether :func:`fit_many` trains ``n_models`` copies of ``model`` fused (see module doc).

    Example:
        >>> mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
        >>> fused_path_applies(mlp, batch_size=32, n_models=8)
        True
        >>> fused_path_applies(nn.Sequential(nn.Conv2d(1, 4, 3)), batch_size=32, n_models=8)
        False
    """
    if n_models < 2 or _mlp_plan(model) is None:
        return False
    n_params = sum(p.numel() for p in model.parameters())
    return batch_size * n_params <= FUSED_MAX_WORK


class _FusedMLP:
    """K MLPs of one architecture as stacked parameters ``(K, out, in)`` and ``(K, out)``.

    The training step is written out by hand (forward with ``baddbmm``, cross-entropy and its
    backward pass), which saves the autograd bookkeeping that dominates small steps.
    """

    def __init__(self, models: Sequence[nn.Module], device: torch.device) -> None:
        plan = _mlp_plan(models[0])
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

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        """Logits ``(K, b, n_classes)`` of inputs ``(K, b, D)``, or ``(b, D)`` shared by all K."""
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
        saved, grad, losses, first_linear = self._forward_backward_head(x, y, scale)
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
        saved, grad, losses, first_linear = self._forward_backward_head(x, y, lr)
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
        log_p = torch.log_softmax(h, dim=2)  # (K, B, C)
        target = y.unsqueeze(2)  # (K, B, 1)
        losses = -log_p.gather(2, target).squeeze(2).mean(dim=1)  # (K,)
        grad = log_p.exp_()  # d loss / d logits = (softmax - onehot) / B
        grad.scatter_add_(2, target, torch.full_like(target, -1, dtype=grad.dtype))
        grad.mul_((scale / y.shape[1]).view(-1, 1, 1))
        first_linear = next(i for i, op in enumerate(self.ops) if op[0] == "linear")
        return saved, grad, losses, first_linear

    def state(self, k: int) -> dict[str, torch.Tensor]:
        """Model ``k``'s ``state_dict`` (CPU copies)."""
        return {n: p[k].detach().to("cpu", copy=True) for n, p in zip(self.names, self.params)}


def _evaluate_fused(
    fused: _FusedMLP, x: torch.Tensor, y: torch.Tensor, n_models: int, batch_size: int
) -> list[dict[str, float]]:
    """Full-pass mean cross-entropy and accuracy of each of the K models."""
    n = int(y.shape[0])
    loss = torch.zeros(n_models, dtype=torch.float64, device=x.device)
    correct = torch.zeros(n_models, dtype=torch.int64, device=x.device)
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            xb, yb = x[start : start + batch_size].flatten(1), y[start : start + batch_size]
            logits = fused(xb)  # (K, b, C)
            per = F.cross_entropy(logits.flatten(0, 1), yb.repeat(n_models), reduction="none").view(
                n_models, -1
            )
            loss += per.sum(dim=1).double()
            correct += (logits.argmax(dim=2) == yb).sum(dim=1)
    return [{"loss": lo / n, "acc": c / n} for lo, c in zip(loss.tolist(), correct.tolist())]


def _broadcast(lrs: Sequence[float], seeds: Sequence[int]) -> tuple[list[float], list[int]]:
    lr_list, seed_list = [float(v) for v in lrs], list(seeds)
    if not lr_list or not seed_list:
        raise UserError("fit_many needs at least one learning rate and one seed")
    n = max(len(lr_list), len(seed_list))
    if len(lr_list) == 1:
        lr_list *= n
    if len(seed_list) == 1:
        seed_list *= n
    if len(lr_list) != len(seed_list):
        raise UserError(
            f"lrs ({len(lr_list)}) and seeds ({len(seed_list)}) must have the same length, "
            "or one of them length 1"
        )
    for s in seed_list:
        _check_int("seed", s, 0)
    return lr_list, seed_list


def fit_many(
    model_factory: ModelFactory,
    train: Data,
    *,
    lrs: Sequence[float],
    seeds: Sequence[int],
    batch_size: int,
    epochs: int,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    eval_sets: Mapping[str, Data] | None = None,
    device: str | torch.device = "auto",
    divergence_bound: float | None = None,
    replacement: bool = False,
    eval_batch_size: int | None = None,
    batched: bool | None = None,
    callback: Callable[[Progress], None] | None = None,
) -> list[TrainResult]:
    """Train K = ``len(lrs)`` configurations (paired with ``seeds``) of one model.

    Run ``k`` equals ``fit(model_factory(torch.Generator().manual_seed(seeds[k])), train,
    lr=lrs[k], seed=seeds[k], ...)`` (see the module docstring for how exactly).

    Args:
        model_factory: ``generator -> nn.Module``; must draw the initial weights from the
            generator (e.g. ``lambda g: build_model("mlp", ..., generator=g)``).
        train: training data (``ImageDataset`` or ``(x, y)``).
        lrs: learning rates; length K, or 1 (shared by all seeds).
        seeds: seeds of initialisation and data order; length K, or 1 (shared by all lrs).
        batch_size: shared minibatch size.
        epochs: shared number of epochs.
        momentum: shared heavy-ball momentum.
        weight_decay: shared L2 coefficient.
        eval_sets: name -> data, evaluated before training and after every epoch.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        divergence_bound: as in ``fit``; each run diverges (and stops) on its own.
        replacement: minibatches with replacement.
        eval_batch_size: examples per forward pass during evaluation (default: by device).
        batched: ``None`` applies the rule (:func:`fused_path_applies`); ``True`` insists on
            the fused path (UserError if the model is not a plain MLP); ``False`` runs ``fit``
            K times.
        callback: called with a :class:`Progress` (``model`` = k) after each evaluation.

    Returns:
        K :class:`TrainResult`, in the order of the configurations. On the fused path every
        result's ``seconds`` / ``train_seconds`` is the wall time of the joint run.

    Raises:
        UserError: for bad options (before any work).

    Example:
        >>> x = torch.randn(64, 1, 2, 2); y = (x.flatten(1).sum(1) > 0).long()
        >>> from sgdtemp.train.models import build_model
        >>> def factory(g):
        ...     return build_model("mlp", in_shape=(1, 2, 2), n_classes=2, width=8, generator=g)
        >>> rs = fit_many(factory, (x, y), lrs=[0.1, 0.2], seeds=[0], batch_size=16, epochs=2,
        ...               device="cpu")
        >>> [r.lr for r in rs], [r.seed for r in rs]
        ([0.1, 0.2], [0, 0])
    """
    lr_list, seed_list = _broadcast(lrs, seeds)
    if eval_batch_size is not None:
        _check_int("eval_batch_size", eval_batch_size, 1)
    models = [model_factory(torch.Generator().manual_seed(s)) for s in seed_list]
    use_fused = (
        fused_path_applies(models[0], batch_size=batch_size, n_models=len(models))
        if batched is None
        else batched
    )
    if use_fused and _mlp_plan(models[0]) is None:
        raise UserError("batched=True needs a plain MLP (Flatten, Linear, ReLU/Tanh layers)")
    if not use_fused:
        results = []
        for k, (model, lr, s) in enumerate(zip(models, lr_list, seed_list)):
            relay = None
            if callback is not None:
                relay = _relay(callback, k)
            results.append(
                fit(
                    model,
                    train,
                    lr=lr,
                    batch_size=batch_size,
                    epochs=epochs,
                    momentum=momentum,
                    weight_decay=weight_decay,
                    eval_sets=eval_sets,
                    seed=s,
                    device=device,
                    divergence_bound=divergence_bound,
                    replacement=replacement,
                    eval_batch_size=eval_batch_size,
                    callback=relay,
                )
            )
        return results
    return _fit_fused(
        models,
        train,
        lrs=lr_list,
        seeds=seed_list,
        batch_size=batch_size,
        epochs=epochs,
        momentum=momentum,
        weight_decay=weight_decay,
        eval_sets=eval_sets,
        device=device,
        divergence_bound=divergence_bound,
        replacement=replacement,
        eval_batch_size=eval_batch_size,
        callback=callback,
    )


def _relay(callback: Callable[[Progress], None], k: int) -> Callable[[Progress], None]:
    def relay(progress: Progress) -> None:
        callback(dataclasses.replace(progress, model=k))

    return relay


def _fit_fused(
    models: list[nn.Module],
    train: Data,
    *,
    lrs: list[float],
    seeds: list[int],
    batch_size: int,
    epochs: int,
    momentum: float,
    weight_decay: float,
    eval_sets: Mapping[str, Data] | None,
    device: str | torch.device,
    divergence_bound: float | None,
    replacement: bool,
    eval_batch_size: int | None,
    callback: Callable[[Progress], None] | None,
) -> list[TrainResult]:
    """The fused path of :func:`fit_many` (same semantics as K calls of ``fit``)."""
    start = time.perf_counter()
    setup = _setup(
        train,
        eval_sets,
        lrs=lrs,
        batch_size=batch_size,
        epochs=epochs,
        momentum=momentum,
        weight_decay=weight_decay,
        device=device,
        dtype=_float_dtype(models[0]),
        divergence_bound=divergence_bound,
    )
    n_models = len(models)
    x, y, dev = setup.x, setup.y, setup.device
    # evaluation holds only (chunk, K * width) activations: larger chunks than for one model
    eval_chunk = FUSED_EVAL_BATCH_SIZE if eval_batch_size is None else eval_batch_size
    n = int(y.shape[0])
    fused = _FusedMLP(models, dev)
    x_flat = x.flatten(1)  # (N, D), a view
    # The update in learning-rate units (the same arithmetic as ``fit`` up to rounding):
    # d = lr*g + lr*wd*theta, v = momentum*v + d (v = d at first), theta -= v.
    lr_now = torch.tensor(lrs, dtype=x.dtype, device=dev)  # (K,); 0 once a run has stopped
    lr_wd = lr_now * weight_decay
    bufs: list[torch.Tensor | None] = [None] * len(fused.params)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    active = [True] * n_models
    reasons: list[str | None] = [None] * n_models
    steps = [0] * n_models
    states: list[dict[str, torch.Tensor] | None] = [None] * n_models
    records: list[list[dict[str, Any]]] = [[] for _ in range(n_models)]

    def measure(epoch: int, step: int) -> None:
        per_set = {"train": _evaluate_fused(fused, x, y, n_models, eval_chunk)}
        for name, (ex, ey) in setup.evals.items():
            per_set[name] = _evaluate_fused(fused, ex, ey, n_models, eval_chunk)
        for k in range(n_models):
            if not active[k]:
                continue
            record = epoch_record(epoch, step, {name: v[k] for name, v in per_set.items()})
            records[k].append(record)
            if callback is not None:
                callback(Progress(k, epoch, epochs, step, record))

    def stop(k: int, reason: str | None) -> None:
        if reason is None or not active[k]:
            return
        active[k] = False
        reasons[k] = reason
        states[k] = fused.state(k)
        # freeze it: its remaining steps are wasted work, not wrong results
        lr_now[k] = lr_wd[k] = 0.0
        for buf in bufs:
            if buf is not None:
                buf[k] = 0.0

    measure(0, 0)
    bounds = [_bound(divergence_bound, r[0]["train"]["loss"]) for r in records]
    for k in range(n_models):
        stop(k, _divergence(records[k][0]["train"]["loss"], math.inf, 0))
    wd_view = [lr_wd.view(-1, *([1] * (p.ndim - 1))) for p in fused.params]
    plain = momentum == 0.0 and weight_decay == 0.0
    x_buf = torch.empty((n_models * batch_size, x_flat.shape[1]), dtype=x.dtype, device=dev)
    y_buf = torch.empty(n_models * batch_size, dtype=y.dtype, device=dev)
    step = 0
    train_seconds = train_cpu = 0.0
    for epoch in range(1, epochs + 1):
        if not any(active):
            break
        tic, cpu = time.perf_counter(), time.process_time()
        order = torch.stack(
            [_epoch_order(n, batch_size, setup.steps_per_epoch, g, replacement) for g in gens],
            dim=1,
        ).to(dev)  # (steps, K, B)
        worst = torch.full((n_models,), -math.inf, dtype=x.dtype, device=dev)
        for batch in order:  # (K, B)
            rows = batch.flatten()
            # gathered into the same buffers every step (no fresh allocation, no page faults)
            xb = torch.index_select(x_flat, 0, rows, out=x_buf).view(n_models, batch_size, -1)
            yb = torch.index_select(y, 0, rows, out=y_buf).view(n_models, batch_size)
            if plain:  # the update folded into the gradient products
                worst = torch.maximum(worst, fused.sgd_step(xb, yb, lr_now))
            else:
                losses, grads = fused.loss_and_grads(xb, yb, lr_now)  # (K,), lr * gradients
                worst = torch.maximum(worst, losses)
                for i, (p, d) in enumerate(zip(fused.params, grads)):
                    if weight_decay != 0.0:
                        d.addcmul_(p, wd_view[i])
                    if momentum != 0.0:
                        buf = bufs[i]
                        if buf is None:
                            buf = bufs[i] = d.clone()
                        else:
                            buf.mul_(momentum).add_(d)
                        d = buf
                    p.sub_(d)
            step += 1
            for k in range(n_models):
                steps[k] += active[k]
            if step % CHECK_EVERY == 0:
                _check_all(worst, bounds, steps, stop, active)
                if not any(active):
                    break
        _check_all(worst, bounds, steps, stop, active)
        _sync(dev)
        train_seconds += time.perf_counter() - tic
        train_cpu += time.process_time() - cpu
        if not any(active):
            break
        measure(epoch, step)
        for k in range(n_models):
            if active[k]:
                stop(k, _divergence(records[k][-1]["train"]["loss"], bounds[k], step))
    seconds = time.perf_counter() - start
    results = []
    for k in range(n_models):
        state = states[k] if states[k] is not None else fused.state(k)
        results.append(
            TrainResult(
                status="ok" if reasons[k] is None else "diverged",
                reason=reasons[k],
                temperature=temperature(lrs[k], batch_size, momentum),
                lr=lrs[k],
                batch_size=batch_size,
                momentum=float(momentum),
                weight_decay=float(weight_decay),
                seed=seeds[k],
                replacement=replacement,
                epochs=records[k],
                steps=steps[k],
                seconds=seconds,
                train_seconds=train_seconds,
                state=state if state is not None else {},
                confounders=(),
                device=str(dev),
                divergence_bound=float(bounds[k]),
                train_cpu_seconds=train_cpu,
            )
        )
    return results


def _check_all(
    worst: torch.Tensor,
    bounds: list[float],
    steps: list[int],
    stop: Callable[[int, str | None], None],
    active: list[bool],
) -> None:
    for k, value in enumerate(worst.tolist()):
        if active[k]:
            stop(k, _divergence(value, bounds[k], steps[k]))
