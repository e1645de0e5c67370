r"""Train K configurations of one small model at once: ``fit_many``.

K runs that share the data and the batch size but differ in learning rate and/or seed are
trained in one process. Each run keeps everything :func:`~sgdtemp.train.trainer.fit` would
give it: its initial weights come from ``model_factory(torch.Generator().manual_seed(seed))``
and its data order from its own generator seeded with ``seed``, so run ``k`` sees exactly the
minibatches ``fit(model_factory(...), train, seed=seeds[k], lr=lrs[k], ...)`` sees.

**When the batched path is used (the rule).** A plain MLP (``nn.Sequential`` of an optional
``Flatten``, ``Linear`` layers and ``ReLU``/``Tanh``) is trained *fused*: the K weight matrices
of each layer are stacked to ``(K, out, in)`` and one ``baddbmm`` per layer runs all K
forward (and, through autograd, backward) passes, followed by one batched SGD update. This pays
when a single model's step is too small to keep the CPU/GPU busy, i.e. when the work per
step, ``batch_size * n_params`` multiply-adds, is below :data:`FUSED_MAX_WORK`; for K = 8 MLPs
784-64-10 at B = 32 it is several times faster than K sequential runs
(``benchmarks/bench_multi.py``). Everything else (convolutional networks, BatchNorm, larger
MLPs, K = 1) runs the K configurations one after another with ``fit``: measured on this
project, generic ``torch.func.vmap`` over ``grad`` gains only ~1.2x over sequential runs for small
models and nothing for larger ones, so it is not worth a second code path.

**How identical the results are.** The sequential path *is* ``fit``: bit-identical. The fused
path does the same arithmetic in a different order (a batched matrix product instead of K
single ones), so the results agree with ``fit`` up to floating-point rounding: in ``float64``
to ~1e-12 relative after hundreds of steps, in ``float32`` to ~1e-5 relative over a few epochs
(rounding differences of 1e-7 per step grow as they are fed back through training). The tests
check float64 to ``rtol=1e-9`` and float32 to ``atol=1e-4`` on the metrics.
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
    _eval_batch_size,
    _float_dtype,
    _setup,
    _sync,
    epoch_record,
    fit,
)

__all__ = ["FUSED_MAX_WORK", "fit_many", "fused_path_applies"]

# Largest per-model work per step (batch_size * parameters, in multiply-adds) trained fused.
FUSED_MAX_WORK = 20_000_000
# Elementwise activations the fused MLP path understands.
_ACTIVATIONS: dict[type[nn.Module], Callable[[torch.Tensor], torch.Tensor]] = {
    nn.ReLU: torch.relu,
    nn.Tanh: torch.tanh,
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
    """K MLPs of one architecture as stacked parameters ``(K, out, in)`` and ``(K, out)``."""

    def __init__(self, models: Sequence[nn.Module], device: torch.device) -> None:
        plan = _mlp_plan(models[0])
        assert plan is not None
        self.ops: list[tuple[str, Any]] = []
        self.params: list[torch.Tensor] = []
        self.names: list[str] = []
        for index, layer in plan:
            if type(layer) is nn.Linear:
                w = torch.stack([dict(m.named_parameters())[f"{index}.weight"] for m in models])
                self.ops.append(("linear", len(self.params)))
                self.params.append(w.detach().to(device).requires_grad_())
                self.names.append(f"{index}.weight")
                if layer.bias is not None:
                    b = torch.stack([dict(m.named_parameters())[f"{index}.bias"] for m in models])
                    self.params.append(b.detach().to(device).requires_grad_())
                    self.names.append(f"{index}.bias")
                else:
                    self.ops[-1] = ("linear_nobias", self.ops[-1][1])
            else:
                self.ops.append(("act", _ACTIVATIONS[type(layer)]))

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        """Logits ``(K, b, n_classes)`` of inputs ``(K, b, D)``, or ``(b, D)`` shared by all K."""
        for kind, arg in self.ops:
            if kind == "act":
                h = arg(h)
                continue
            w_t = self.params[arg].transpose(1, 2)  # (K, in, out)
            if h.ndim == 2:  # shared input: (b, in) @ (K, in, out) -> (K, b, out)
                h = torch.matmul(h, w_t)
                if kind == "linear":
                    h = h + self.params[arg + 1].unsqueeze(1)
            elif kind == "linear":
                h = torch.baddbmm(self.params[arg + 1].unsqueeze(1), h, w_t)
            else:
                h = torch.bmm(h, w_t)
        return h

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
    eval_chunk = _eval_batch_size(eval_batch_size, dev)
    n = int(y.shape[0])
    fused = _FusedMLP(models, dev)
    neg_lr = -torch.tensor(lrs, dtype=x.dtype, device=dev)  # (K,)
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
        neg_lr[k] = 0.0  # freeze it; its remaining steps are wasted work, not wrong results

    measure(0, 0)
    bounds = [_bound(divergence_bound, r[0]["train"]["loss"]) for r in records]
    for k in range(n_models):
        stop(k, _divergence(records[k][0]["train"]["loss"], math.inf, 0))
    lr_view = [neg_lr.view(-1, *([1] * (p.ndim - 1))) for p in fused.params]
    step = 0
    train_seconds = 0.0
    for epoch in range(1, epochs + 1):
        if not any(active):
            break
        tic = time.perf_counter()
        order = torch.stack(
            [_epoch_order(n, batch_size, setup.steps_per_epoch, g, replacement) for g in gens],
            dim=1,
        ).to(dev)  # (steps, K, B)
        worst = torch.full((n_models,), -math.inf, dtype=x.dtype, device=dev)
        for batch in order:  # (K, B)
            xb = x[batch].flatten(2)  # (K, B, D)
            logits = fused(xb)  # (K, B, C)
            losses = (
                F.cross_entropy(logits.flatten(0, 1), y[batch].flatten(), reduction="none")
                .view(n_models, batch_size)
                .mean(dim=1)
            )  # (K,)
            grads = torch.autograd.grad(losses.sum(), fused.params)
            with torch.no_grad():
                for i, (p, g) in enumerate(zip(fused.params, grads)):
                    if weight_decay != 0.0:
                        g = g.add(p, alpha=weight_decay)
                    if momentum != 0.0:
                        buf = bufs[i]
                        if buf is None:
                            buf = bufs[i] = g.clone()
                        else:
                            buf.mul_(momentum).add_(g)
                        g = buf
                    p.addcmul_(g, lr_view[i])
                worst = torch.maximum(worst, losses.detach())
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
