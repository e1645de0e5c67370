r"""Train K runs of one model at once: ``fit_many``.

K runs that share the data, the model architecture and the batch size, but each with its own
:class:`~sgdtemp.train.options.FitOptions` (learning rate, weight decay, momentum, seed, epochs,
divergence bound, data order), are trained in one process. Each run keeps everything
:func:`~sgdtemp.train.trainer.fit` would give it: its initial weights come from
``model_factory(torch.Generator().manual_seed(seed))``, its data order from its own generator
seeded with ``seed``, its evaluations come after the same epochs, and it stops on its own (its
epochs run out, or its loss diverges) while the others go on.

**Fused or one after another (the rule).** When K >= 2 and the model can be stacked (no buffers,
see :mod:`sgdtemp.train.stacked`), the K runs step together: their parameters are stacked along a
model axis and one pass computes all K forward and backward passes, each model on its own
minibatch; a run that stops leaves the stack. For plain MLPs the stacked step is hand-written
(``baddbmm``; measured 3-6x faster than K plain PyTorch loops for small MLPs on 2 CPU cores, see
``benchmarks/bench_multi.py``) and taken when one model's step is at most :data:`FUSED_MAX_WORK`
multiply-adds. The reference CNN and the residual net run as one wide net of grouped convolutions
(:mod:`sgdtemp.train.stacked_conv`); their convolutions are compute-bound, so stacking only removes
overhead: on one CPU thread (sweep workers) they are taken while one model's step (batch size x
forward multiply-adds per example) is at most :data:`CONV_FUSED_MAX_WORK` (K = 12 at B = 32:
1.41-1.48x at width 8, 0.97-1.00x at the default width 32, which is fused at B = 8, 1.18-1.29x, and
runs one after another from B = 16), and always with several threads or on a GPU (on 2 shared
cores, K = 12 width-32 CNNs with evaluation: 2.3x wall; ``benchmarks/bench_fused_cnn.py``). Other
models go through ``torch.func.vmap`` when :data:`STACK_MODELS` allows it. Everything else runs
``fit`` K times.

**How identical the results are.** One after another *is* ``fit``: bit-identical. Fused, the same
arithmetic runs in a different order (batched products, the learning rate applied to the
gradient before weight decay and momentum), so results agree with ``fit`` up to rounding: in
``float64`` to ~1e-15 relative after hundreds of steps, in ``float32`` to ~1e-7 in the weights per
step, which training can amplify over long runs (the tests check float64 to ``rtol=1e-9``, and
float32 records of the sweep to the tolerance stated in ``tests/train/test_train_multi.py``). The
fused path itself is deterministic.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from sgdtemp.errors import UserError
from sgdtemp.train.evaluation import model_expectations
from sgdtemp.train.options import FitOptions
from sgdtemp.train.stacked import (
    AbstractStacked,
    evaluate_stacked,
    mlp_plan,
    stack_models,
    stackable,
)
from sgdtemp.train.stacked_conv import convnet_stackable, forward_macs
from sgdtemp.train.stationary_run import StationaryTracker
from sgdtemp.train.trainer import (
    CHECK_EVERY,
    Data,
    Progress,
    TrainResult,
    _bound,
    _divergence,
    _epoch_order,
    _float_dtype,
    _setup,
    _sync,
    _tensors,
    epoch_record,
    fit,
    resolve_device,
)

__all__ = [
    "CONV_FUSED_MAX_WORK",
    "FUSED_MAX_WORK",
    "STACK_MODELS",
    "fit_many",
    "fused_path_applies",
]

# Largest per-model work per step (batch_size * parameters, in multiply-adds) of an MLP trained
# fused (beyond it the batched products lose to K plain ones: benchmarks/bench_multi.py).
FUSED_MAX_WORK = 10_000_000
#: Whether models other than plain MLPs (CNNs, residual nets) are trained stacked by default.
STACK_MODELS = True
# Largest per-model work per step (batch_size * forward multiply-adds per example) of a
# convolutional net trained fused by one CPU thread: up to it K = 12 fused steps measured
# 0.98-1.48x of 12 plain ones (width-32 CNN at B = 8: 1.29x), beyond it 0.77-1.07x, as the K-wide
# feature maps outgrow the caches (benchmarks/bench_fused_cnn.py --sweep; the module docstring of
# sgdtemp.train.stacked_conv).
CONV_FUSED_MAX_WORK = 64_000_000
# Examples per evaluation chunk on the fused path (only (chunk, K * width) activations live).
FUSED_EVAL_BATCH_SIZE = 1024

ModelFactory = Callable[[torch.Generator], nn.Module]
#: Called with (run index, its result) as soon as a run has finished.
ResultCallback = Callable[[int, TrainResult], None]


def fused_path_applies(
    model: nn.Module,
    *,
    batch_size: int,
    n_models: int,
    in_shape: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
) -> bool:
    """Whether :func:`fit_many` trains ``n_models`` copies of ``model`` fused (module doc).

    Args:
        model: one of the models.
        batch_size: the runs' batch size.
        n_models: K.
        in_shape: shape of one input example; a convolutional net trained by one CPU thread
            is fused only when ``batch_size`` times its forward multiply-adds per example
            (:func:`~sgdtemp.train.stacked_conv.forward_macs`) is at most
            :data:`CONV_FUSED_MAX_WORK` (``None``: no bound).
        device: the training device (``"auto"`` allowed); the bound is for CPUs only.

    Example:
        >>> mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
        >>> fused_path_applies(mlp, batch_size=32, n_models=8)
        True
        >>> fused_path_applies(nn.Sequential(nn.BatchNorm1d(4)), batch_size=32, n_models=8)
        False
    """
    if n_models < 2 or not stackable(model):
        return False
    if mlp_plan(model) is None:
        if not STACK_MODELS:
            return False
        if in_shape is None or not convnet_stackable(model):
            return True
        if resolve_device(device).type != "cpu" or torch.get_num_threads() > 1:
            return True
        return batch_size * forward_macs(model, in_shape) <= CONV_FUSED_MAX_WORK
    n_params = sum(p.numel() for p in model.parameters())
    return batch_size * n_params <= FUSED_MAX_WORK


def _legacy_options(lrs: Any, seeds: Any, fields: Mapping[str, Any]) -> list[FitOptions]:
    """``lrs`` and ``seeds`` (each of length K or 1) with shared fields, as K options."""
    lr_list, seed_list = (
        list(lrs if lrs is not None else []),
        list(seeds if seeds is not None else [0]),
    )
    if not lr_list or not seed_list:
        raise UserError("fit_many needs options, or at least one learning rate and one seed")
    n = max(len(lr_list), len(seed_list))
    lr_list = lr_list * n if len(lr_list) == 1 else lr_list
    seed_list = seed_list * n if len(seed_list) == 1 else seed_list
    if len(lr_list) != len(seed_list):
        raise UserError(
            f"lrs ({len(lr_list)}) and seeds ({len(seed_list)}) must have the same length, "
            "or one of them length 1"
        )
    try:
        return [FitOptions(lr=float(lr), seed=s, **fields) for lr, s in zip(lr_list, seed_list)]
    except TypeError as err:
        raise UserError(f"fit_many: {err}") from err


def _check_group(options: Sequence[FitOptions]) -> None:
    if not options:
        raise UserError("fit_many needs at least one run")
    first = options[0]
    for o in options[1:]:
        for name in ("batch_size", "device", "eval_batch_size"):
            if getattr(o, name) != getattr(first, name):
                raise UserError(
                    f"fit_many: all runs share {name}; got {getattr(first, name)!r} and "
                    f"{getattr(o, name)!r} (train them in separate calls)"
                )


def fit_many(
    model_factory: ModelFactory,
    train: Data,
    options: Sequence[FitOptions] | None = None,
    *,
    eval_sets: Mapping[str, Data] | None = None,
    batched: bool | None = None,
    callback: Callable[[Progress], None] | None = None,
    on_result: ResultCallback | None = None,
    lrs: Sequence[float] | None = None,
    seeds: Sequence[int] | None = None,
    **fields: Any,
) -> list[TrainResult]:
    """Train K runs of one model, each with its own options (fused when the rule says so).

    Run ``k`` equals ``fit(model_factory(torch.Generator().manual_seed(o.seed)), train, o)``
    for ``o = options[k]`` (see the module docstring for how exactly).

    Args:
        model_factory: ``generator -> nn.Module``; must draw the initial weights from the
            generator (e.g. ``lambda g: build_model("mlp", ..., generator=g)``).
        train: training data (``ImageDataset`` or ``(x, y)``).
        options: one :class:`~sgdtemp.train.options.FitOptions` per run; they must share the
            batch size, the device and the evaluation batch size.
        eval_sets: name -> data, evaluated before training and after every epoch.
        batched: ``None`` applies the rule (:func:`fused_path_applies`); ``True`` insists on
            the fused path (UserError if the model cannot be stacked); ``False`` runs ``fit``
            K times.
        callback: called with a :class:`Progress` (``model`` = k) after each evaluation.
        on_result: called with ``(k, result)`` as soon as run ``k`` has finished (before the
            others, when it stops early), e.g. to save it at once.
        lrs: instead of ``options``: learning rates (length K, or 1), with ``seeds``
            (length K, or 1) and the shared ``fields`` of FitOptions.
        seeds: see ``lrs``.
        **fields: with ``lrs``: the FitOptions fields shared by all runs.

    Returns:
        K :class:`TrainResult`, in the order of the runs. On the fused path every result's
        ``seconds`` / ``train_seconds`` is the wall time of the joint run so far.

    Raises:
        UserError: for bad options (before any work).

    Example:
        >>> x = torch.randn(64, 1, 2, 2); y = (x.flatten(1).sum(1) > 0).long()
        >>> from sgdtemp.train.models import build_model
        >>> def factory(g):
        ...     return build_model("mlp", in_shape=(1, 2, 2), n_classes=2, width=8, generator=g)
        >>> runs = [FitOptions(lr=lr, batch_size=16, epochs=2, device="cpu") for lr in (0.1, 0.2)]
        >>> rs = fit_many(factory, (x, y), runs)
        >>> [r.lr for r in rs], [r.seed for r in rs]
        ([0.1, 0.2], [0, 0])
    """
    if options is None:
        options = _legacy_options(lrs, seeds, fields)
    elif lrs is not None or seeds is not None or fields:
        raise UserError("fit_many takes options, or lrs/seeds with shared fields, not both")
    options = list(options)
    _check_group(options)
    models = [model_factory(torch.Generator().manual_seed(o.seed)) for o in options]
    use_fused = (
        fused_path_applies(
            models[0],
            batch_size=options[0].batch_size,
            n_models=len(models),
            in_shape=tuple(_tensors(train, "train")[0].shape[1:]),
            device=options[0].device,
        )
        if batched is None
        else batched
    )
    if use_fused and not stackable(models[0]):
        raise UserError("batched=True needs a model without buffers (no BatchNorm)")
    if use_fused:
        return _fit_fused(models, train, options, eval_sets, callback, on_result)
    results = []
    for k, (model, o) in enumerate(zip(models, options)):
        relay = None if callback is None else _relay(callback, k)
        result = fit(model, train, o, eval_sets=eval_sets, callback=relay)
        if on_result is not None:
            on_result(k, result)
        results.append(result)
    return results


def _relay(callback: Callable[[Progress], None], k: int) -> Callable[[Progress], None]:
    def relay(progress: Progress) -> None:
        callback(dataclasses.replace(progress, model=k))

    return relay


class _Runs:
    """Per-run bookkeeping of the fused loop; row ``r`` of the stack is run ``rows[r]``."""

    def __init__(self, options: Sequence[FitOptions], dtype: torch.dtype, device: Any) -> None:
        self.options = list(options)
        self.rows = list(range(len(options)))
        self.reasons: list[str | None] = [None] * len(options)
        self.steps = [0] * len(options)
        self.records: list[list[dict[str, Any]]] = [[] for _ in options]
        self.bounds = [math.inf] * len(options)
        self.results: dict[int, TrainResult] = {}
        self.gens = [torch.Generator().manual_seed(o.seed) for o in options]

        def vector(name: str) -> torch.Tensor:
            return torch.tensor([getattr(o, name) for o in options], dtype=dtype, device=device)

        self.lr, self.weight_decay, self.momentum = (
            vector("lr"),
            vector("weight_decay"),
            vector("momentum"),
        )
        self.plain = all(o.weight_decay == 0 and o.momentum == 0 for o in options)

    def keep(self, keep: Sequence[int]) -> None:
        """Keep the rows ``keep`` (positions in :attr:`rows`)."""
        index = torch.as_tensor(list(keep), dtype=torch.long, device=self.lr.device)
        self.rows = [self.rows[r] for r in keep]
        self.lr, self.weight_decay, self.momentum = (
            v.index_select(0, index) for v in (self.lr, self.weight_decay, self.momentum)
        )


def _fit_fused(
    models: list[nn.Module],
    train: Data,
    options: list[FitOptions],
    eval_sets: Mapping[str, Data] | None,
    callback: Callable[[Progress], None] | None,
    on_result: ResultCallback | None,
) -> list[TrainResult]:
    """The fused path of :func:`fit_many` (same semantics as K calls of ``fit``)."""
    start = time.perf_counter()
    first = options[0]
    batch_size = first.batch_size
    setup = _setup(
        train, eval_sets, batch_size=batch_size, device=first.device, dtype=_float_dtype(models[0])
    )
    x, y, dev = setup.x, setup.y, setup.device
    eval_chunk = FUSED_EVAL_BATCH_SIZE if first.eval_batch_size is None else first.eval_batch_size
    n = int(y.shape[0])
    stacked = stack_models(models, dev)
    confounders: tuple[str, ...] = ()  # stackable models have no BatchNorm
    runs = _Runs(options, x.dtype, dev)
    bufs: list[torch.Tensor | None] = [None] * len(stacked.params)
    timing = {"train": 0.0, "cpu": 0.0}
    trackers = {
        k: StationaryTracker(o.stationary, o.lr, setup.steps_per_epoch, o.seed)
        for k, o in enumerate(options)
        if o.stationary is not None
    }
    max_epochs = [
        trackers[k].max_epochs if k in trackers else o.epochs for k, o in enumerate(options)
    ]
    probe_n = max((o.stationary.probe_examples for o in options if o.stationary), default=0)
    probe = (x[:probe_n], y[:probe_n])

    def finish(k: int, state: dict[str, torch.Tensor]) -> None:
        o = options[k]
        outcome = trackers[k].outcome(runs.steps[k]) if k in trackers else None
        expected = None
        if outcome is not None and outcome.mean is not None and runs.reasons[k] is None:
            assert o.stationary is not None
            model = models[k]
            model.load_state_dict(state)
            model.to(dev)
            expected = model_expectations(
                model,
                [p for p in model.parameters() if p.requires_grad],
                {"train": (x, y), **setup.evals},
                outcome,
                o.stationary.expectation_examples,
                eval_chunk,
            )
        result = TrainResult(
            status="ok" if runs.reasons[k] is None else "diverged",
            reason=runs.reasons[k],
            temperature=o.temperature,
            lr=float(o.lr),
            batch_size=batch_size,
            momentum=float(o.momentum),
            weight_decay=float(o.weight_decay),
            seed=o.seed,
            replacement=o.replacement,
            epochs=runs.records[k],
            steps=runs.steps[k],
            seconds=time.perf_counter() - start,
            train_seconds=timing["train"],
            state=state,
            confounders=confounders,
            device=str(dev),
            divergence_bound=float(runs.bounds[k]),
            train_cpu_seconds=timing["cpu"],
            stationary=None if outcome is None else outcome.summary,
            expectations=expected,
            stationary_mean=None if outcome is None else outcome.mean,
            stationary_iterates=None if outcome is None else outcome.iterates,
        )
        runs.results[k] = result
        if on_result is not None:
            on_result(k, result)

    def leave(done: Sequence[int]) -> None:
        """Finish the runs at rows ``done`` and take them out of the stack."""
        if not done:
            return
        for r in done:
            finish(runs.rows[r], stacked.state(r))
        keep = [r for r in range(len(runs.rows)) if r not in set(done)]
        if keep:
            stacked.keep(keep)
            index = torch.as_tensor(keep, dtype=torch.long, device=dev)
            for i, buf in enumerate(bufs):
                if buf is not None:
                    bufs[i] = buf.index_select(0, index)
        runs.keep(keep)

    def measure(epoch: int) -> None:
        per_set = {"train": evaluate_stacked(stacked, x, y, eval_chunk)}
        for name, (ex, ey) in setup.evals.items():
            per_set[name] = evaluate_stacked(stacked, ex, ey, eval_chunk)
        for r, k in enumerate(runs.rows):
            record = epoch_record(epoch, runs.steps[k], {s: v[r] for s, v in per_set.items()})
            runs.records[k].append(record)
            if callback is not None:
                callback(Progress(k, epoch, max_epochs[k], runs.steps[k], record))

    def diverged(losses: Sequence[float], bounds: Sequence[float]) -> list[int]:
        out = []
        for r, (k, loss) in enumerate(zip(runs.rows, losses)):
            runs.reasons[k] = _divergence(loss, bounds[k], runs.steps[k])
            if runs.reasons[k] is not None:
                out.append(r)
        return out

    measure(0)
    for k in range(len(options)):
        runs.bounds[k] = _bound(options[k].divergence_bound, runs.records[k][0]["train"]["loss"])
    leave(
        diverged(
            [runs.records[k][0]["train"]["loss"] for k in runs.rows], [math.inf] * len(options)
        )
    )

    def probe_stationary(step: int, skip: set[int]) -> list[int]:
        """Probe the runs due at ``step`` (but ``skip``); return the rows whose probe diverged."""
        due = [
            r
            for r, k in enumerate(runs.rows)
            if k in trackers and r not in skip and trackers[k].due(step)
        ]
        if not due:
            return []
        view = _rows(stacked, due)
        losses = evaluate_stacked(view, *probe, eval_chunk)
        sq = torch.stack([p.double().pow(2).flatten(1).sum(1) for p in view.params]).sum(0).tolist()
        gone = []
        for j, r in enumerate(due):
            k = runs.rows[r]
            value = losses[j]["loss"] + 0.5 * options[k].weight_decay * sq[j]
            runs.reasons[k] = _divergence(value, runs.bounds[k], step)
            if runs.reasons[k] is not None:
                gone.append(r)
                continue
            trackers[k].observe(step, value, functools.partial(flat_row, view, j))
        return gone

    step = 0
    for epoch in range(1, max(max_epochs) + 1):
        leave([r for r, k in enumerate(runs.rows) if max_epochs[k] < epoch])
        if not runs.rows:
            break
        tic, cpu = time.perf_counter(), time.process_time()
        order = torch.stack(
            [
                _epoch_order(
                    n, batch_size, setup.steps_per_epoch, runs.gens[k], options[k].replacement
                )
                for k in runs.rows
            ],
            dim=1,
        ).to(dev)  # (steps, K, B)
        worst = torch.full((len(runs.rows),), -math.inf, dtype=x.dtype, device=dev)
        s = 0
        while s < order.shape[0]:
            batch = order[s]  # (K, B)
            xb = x.index_select(0, batch.flatten()).view(*batch.shape, *x.shape[1:])
            yb = y.index_select(0, batch.flatten()).view(batch.shape)
            worst = torch.maximum(worst, _step(stacked, runs, bufs, xb, yb))
            step += 1
            s += 1
            for k in runs.rows:
                runs.steps[k] += 1
            gone = diverged(worst.tolist(), runs.bounds) if step % CHECK_EVERY == 0 else []
            if trackers:
                gone += probe_stationary(step, skip=set(gone))
            if gone:
                keep = [r for r in range(len(runs.rows)) if r not in gone]
                leave(sorted(gone))
                if not runs.rows:
                    break
                order = order[:, keep]
                worst = worst[keep]
        if runs.rows:
            gone = diverged(worst.tolist(), runs.bounds)
            leave(gone)
        _sync(dev)
        timing["train"] += time.perf_counter() - tic
        timing["cpu"] += time.process_time() - cpu
        if not runs.rows:
            break
        measure(epoch)
        leave(diverged([runs.records[k][-1]["train"]["loss"] for k in runs.rows], runs.bounds))
        leave(
            [
                r
                for r, k in enumerate(runs.rows)
                if k in trackers and trackers[k].finished(runs.steps[k], epoch)
            ]
        )
    leave(list(range(len(runs.rows))))
    return [runs.results[k] for k in range(len(options))]


def _rows(stacked: AbstractStacked, rows: Sequence[int]) -> AbstractStacked:
    """The models at ``rows`` as a stack of their own (copies of their parameters)."""
    view = copy.copy(stacked)
    index = torch.as_tensor(list(rows), dtype=torch.long, device=stacked.params[0].device)
    view.params = [p.index_select(0, index) for p in stacked.params]
    return view


def flat_row(stacked: AbstractStacked, row: int) -> torch.Tensor:
    """Model ``row``'s parameters as one flat vector (``named_parameters`` order)."""
    return torch.cat([p[row].reshape(-1) for p in stacked.params])


def _step(
    stacked: AbstractStacked,
    runs: _Runs,
    bufs: list[torch.Tensor | None],
    xb: torch.Tensor,
    yb: torch.Tensor,
) -> torch.Tensor:
    """One SGD step of every run in the stack; their minibatch losses ``(K,)`` before it.

    The update in learning-rate units (``fit``'s arithmetic up to rounding):
    ``d = lr g + lr wd theta``, ``v = momentum v + d`` (``v = d`` at first), ``theta -= v``.
    """
    if runs.plain:  # the update folded into the gradient products where the stack can
        return stacked.sgd_step(xb, yb, runs.lr)
    with torch.no_grad():
        losses, grads = stacked.loss_and_grads(xb, yb, runs.lr)
        lr_wd = runs.lr * runs.weight_decay
        for i, (p, d) in enumerate(zip(stacked.params, grads)):
            shape = (-1, *([1] * (p.ndim - 1)))
            d.addcmul_(p, lr_wd.view(shape))
            buf = bufs[i]
            if buf is None:
                buf = bufs[i] = d.clone()
            else:
                buf.mul_(runs.momentum.view(shape)).add_(d)
            p.sub_(buf)
    return losses
