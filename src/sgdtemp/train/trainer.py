r"""The clean SGD trainer: constant learning rate, in-memory data, per-epoch full-pass metrics.

One step on a minibatch $\mathcal B$ of $B$ examples is

$$g = \frac1B\sum_{n\in\mathcal B}\nabla\ell(\theta; z_n) + \lambda\theta,\qquad
v \leftarrow \beta v + g,\qquad \theta \leftarrow \theta - \eta v$$

(cross-entropy $\ell$, weight decay $\lambda$, heavy-ball momentum $\beta$, $v = g$ on the first
step: exactly ``torch.optim.SGD``, written out in :class:`SGD` because constructing a
``torch.optim`` optimizer imports ``torch._dynamo`` and sympy, about 2 s and 40 MB per process), so
its temperature is $T = \eta / (B(1-\beta))$ (:func:`sgdtemp.theory.temperature.temperature`).

The data stay in memory as tensors on the training device (no ``DataLoader``). Each epoch draws
a permutation of the $N$ training examples from a CPU ``torch.Generator`` and takes
$\lfloor N/B \rfloor$ minibatches from it (sampling without replacement; the last
$N \bmod B$ examples of the permutation are skipped so that every step has exactly $B$
examples, hence the same gradient noise); ``replacement=True`` instead draws every minibatch
uniformly with replacement. An epoch is $\lfloor N/B\rfloor$ steps either way.

Before the first step (epoch 0) and after every epoch the model is evaluated in ``eval`` mode
with full passes over the training set and every evaluation set (not a running average of
minibatch losses).

Reproducibility: on a CPU the same model, data, options and seed give bit-identical results.
On CUDA they do not (cuDNN and atomic reductions reorder float sums): measured on an H200 with
``benchmarks/bench_cuda.py``, two CUDA runs of the reference CNN differed in the last digits, and
CUDA vs CPU per-epoch training losses differed by at most 1.8e-4 relative after two epochs.

The trainer writes no files and prints nothing; progress goes to an optional callback.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

import torch
import torch.nn.functional as F
from torch import nn

from sgdtemp.errors import UserError
from sgdtemp.theory.temperature import temperature
from sgdtemp.train.evaluation import (
    EVAL_BATCH_SIZES,
    epoch_record,
    evaluate,
    flat_params,
    half_sq_norm,
    model_expectations,
    resolve_eval_batch_size,
)
from sgdtemp.train.models import temperature_confounders
from sgdtemp.train.options import FitOptions
from sgdtemp.train.stationary_run import StationaryTracker

if TYPE_CHECKING:
    from sgdtemp.data import ImageDataset
    from sgdtemp.monitor import MonitorOptions

__all__ = [
    "DEFAULT_DIVERGENCE_FACTOR",
    "EVAL_BATCH_SIZES",
    "Data",
    "Progress",
    "SGD",
    "TrainResult",
    "evaluate",
    "fit",
    "resolve_device",
]

Data: TypeAlias = "ImageDataset | tuple[torch.Tensor, torch.Tensor]"

# Default divergence bound: this factor times max(initial full-pass training loss, 1).
DEFAULT_DIVERGENCE_FACTOR = 100.0
# Steps between divergence checks; each check reads one scalar back from the device.
CHECK_EVERY = 16
# Eval-set names that would clash with the keys of an epoch's record.
_RESERVED = ("epoch", "step", "train")


@dataclass(frozen=True)
class Progress:
    """What the trainer reports to its callback after each epoch's evaluation.

    Attributes:
        model: index of the model (0 for :func:`fit`, the config's index in ``fit_many``).
        epoch: epochs done (0 = before training).
        epochs: epochs asked for.
        step: SGD steps done.
        metrics: the epoch's record (see :attr:`TrainResult.epochs`).
    """

    model: int
    epoch: int
    epochs: int
    step: int
    metrics: dict[str, Any]


@dataclass(frozen=True)
class TrainResult:
    r"""Outcome of one training run.

    Attributes:
        status: ``"ok"``, or ``"diverged"`` when the loss became non-finite or exceeded the
            divergence bound (training stopped there).
        reason: why it diverged (``None`` when ``ok``).
        temperature: $T = \eta/(B(1-\beta))$.
        lr: learning rate $\eta$.
        batch_size: minibatch size $B$.
        momentum: heavy-ball momentum $\beta$.
        weight_decay: L2 coefficient added to the gradient.
        seed: seed of the data-order generator (``None`` when a generator was passed).
        replacement: minibatches drawn with replacement.
        epochs: one record per evaluated epoch, starting with epoch 0 (before training):
            ``{"epoch": e, "step": k, "train": {"loss": .., "acc": ..}, "<name>": {...}}``;
            an eval set named ``"prefix:rest"`` (e.g. ``"corrupt:fog:3"``) is stored as
            ``record["prefix"]["rest"]``. Losses are mean cross-entropies, accuracies fractions.
        steps: SGD steps taken.
        seconds: wall time of the run, evaluation included.
        train_seconds: wall time of the SGD steps alone.
        state: final ``state_dict`` (CPU copies).
        confounders: layer types that make the loss depend on the batch size (BatchNorm).
        device: where it trained.
        divergence_bound: the loss bound that was in force.
        train_cpu_seconds: CPU time of this process during the SGD steps (all threads; a
            benchmark figure that other load on the machine barely moves; not in
            :meth:`to_dict`, since the record keeps wall times only).
        stationary: for a run trained until stationary, whether and when it became stationary
            and its window (:class:`~sgdtemp.train.stationary_run.StationaryOutcome`'s
            summary); None for a fixed number of epochs.
        expectations: the stationary expectations per set (``train`` and the evaluation sets):
            ``{set: {"loss", "stderr", "at_mean"}}``; None when not stationary.
        stationary_mean: the window's mean weights $\bar\theta$, flat (not in :meth:`to_dict`).
        stationary_iterates: the reservoir's iterates ``(k, d)`` (not in :meth:`to_dict`).
        monitor: the temperature monitor's summary when ``fit`` ran one (its settings, every
            probe record, its overhead; :meth:`sgdtemp.monitor.TemperatureMonitor.summary`).
    """

    status: str
    reason: str | None
    temperature: float
    lr: float
    batch_size: int
    momentum: float
    weight_decay: float
    seed: int | None
    replacement: bool
    epochs: list[dict[str, Any]]
    steps: int
    seconds: float
    train_seconds: float
    state: dict[str, torch.Tensor] = field(repr=False)
    confounders: tuple[str, ...]
    device: str
    divergence_bound: float
    train_cpu_seconds: float = 0.0
    stationary: dict[str, Any] | None = None
    expectations: dict[str, dict[str, float]] | None = None
    stationary_mean: torch.Tensor | None = field(default=None, repr=False)
    stationary_iterates: torch.Tensor | None = field(default=None, repr=False)
    monitor: dict[str, Any] | None = None

    @property
    def confounds_temperature(self) -> bool:
        """Whether the model makes the loss depend on the batch size (BatchNorm)."""
        return bool(self.confounders)

    @property
    def final(self) -> dict[str, Any]:
        """The last epoch's record."""
        return self.epochs[-1]

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready values, without the weights (the record of ``sgdtemp train``).

        Example:
            >>> x, y = torch.rand(40, 1, 4, 4), torch.arange(40) % 2
            >>> r = fit(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), (x, y), lr=0.1,
            ...         batch_size=8, epochs=1, device="cpu")
            >>> sorted(r.to_dict())[:5]
            ['batch_size', 'confounders', 'confounds_temperature', 'device', 'divergence_bound']
        """
        out: dict[str, Any] = {
            "status": self.status,
            "reason": self.reason,
            "temperature": self.temperature,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "seed": self.seed,
            "replacement": self.replacement,
            "steps": self.steps,
            "seconds": self.seconds,
            "train_seconds": self.train_seconds,
            "device": self.device,
            "divergence_bound": self.divergence_bound,
            "confounds_temperature": self.confounds_temperature,
            "confounders": list(self.confounders),
            "epochs": self.epochs,
            **self._stationary_dict(),
        }
        if self.monitor is not None:
            out["monitor"] = self.monitor
        return out

    def _stationary_dict(self) -> dict[str, Any]:
        if self.stationary is None:
            return {}
        out: dict[str, Any] = {"stationary": self.stationary}
        if self.expectations is not None:
            e = self.expectations
            out["expectations"] = {name: v["loss"] for name, v in e.items()}
            out["expectations_stderr"] = {name: v["stderr"] for name, v in e.items()}
            out["at_mean"] = {name: v["at_mean"] for name, v in e.items()}
        return out


# ---------------------------------------------------------------- inputs


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is checked and passed on.

    Raises:
        UserError: for an unknown device name or CUDA asked for where there is none.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise UserError(f"unknown device {device!r}; use auto, cpu or cuda") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device} asked for, but CUDA is not available; use cpu or auto")
    return dev


def _tensors(data: Data, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of an ImageDataset or an ``(x, y)`` pair, checked."""
    if isinstance(data, tuple):
        if len(data) != 2:
            raise UserError(f"data set {name} must be an (x, y) pair, got {len(data)} items")
        x, y = data
    else:
        x, y = data.x, data.y
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise UserError(f"data set {name}: x and y must be tensors")
    if x.ndim < 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise UserError(
            f"data set {name}: x must be (N, ...) and y (N,), got {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )
    if x.shape[0] == 0:
        raise UserError(f"data set {name} is empty")
    if y.dtype != torch.int64:
        raise UserError(f"data set {name}: labels must be int64 class indices, got {y.dtype}")
    return x, y


def _check_int(name: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise UserError(f"{name} must be an integer >= {least}, got {value!r}")
    return value


# ---------------------------------------------------------------- the run


@dataclass(frozen=True)
class _Setup:
    """Checked options shared by :func:`fit` and ``fit_many``."""

    x: torch.Tensor  # (N, ...) on the device
    y: torch.Tensor  # (N,)
    evals: dict[str, tuple[torch.Tensor, torch.Tensor]]
    device: torch.device
    steps_per_epoch: int


def _setup(
    train: Data,
    eval_sets: Mapping[str, Data] | None,
    *,
    batch_size: int,
    device: str | torch.device,
    dtype: torch.dtype,
) -> _Setup:
    x, y = _tensors(train, "train")
    n = int(y.shape[0])
    if batch_size > n:
        raise UserError(
            f"batch_size {batch_size} is larger than the training set ({n} examples); "
            f"choose at most {n}"
        )
    evals: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name, data in (eval_sets or {}).items():
        if name in _RESERVED or name.partition(":")[0] in _RESERVED:
            raise UserError(f"eval set name {name!r} is reserved; rename it")
        ex, ey = _tensors(data, name)
        if ex.shape[1:] != x.shape[1:]:
            raise UserError(
                f"eval set {name}: inputs {tuple(ex.shape[1:])} differ from the training "
                f"inputs {tuple(x.shape[1:])}"
            )
        evals[name] = (ex, ey)
    dev = resolve_device(device)
    moved = {k: (ex.to(dev, dtype), ey.to(dev)) for k, (ex, ey) in evals.items()}
    return _Setup(x.to(dev, dtype), y.to(dev), moved, dev, n // batch_size)


def _float_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


def _epoch_order(
    n: int, batch_size: int, steps: int, generator: torch.Generator, replacement: bool
) -> torch.Tensor:
    """Example indices of one epoch's minibatches, ``(steps, batch_size)`` on the CPU."""
    if replacement:
        return torch.randint(n, (steps, batch_size), generator=generator)
    return torch.randperm(n, generator=generator)[: steps * batch_size].view(steps, batch_size)


def _bound(divergence_bound: float | None, initial_loss: float) -> float:
    """The divergence bound in force: the given one, or the default from the initial loss."""
    if divergence_bound is not None:
        return float(divergence_bound)
    if not math.isfinite(initial_loss):
        return math.inf  # the run stops at once anyway
    return DEFAULT_DIVERGENCE_FACTOR * max(initial_loss, 1.0)


def _divergence(loss: float, bound: float, step: int) -> str | None:
    if not math.isfinite(loss):
        return f"training loss became {loss} by step {step}"
    if loss > bound:
        return f"training loss {loss:.4g} exceeded the divergence bound {bound:.4g} by step {step}"
    return None


class SGD:
    r"""Plain SGD with heavy-ball momentum and L2 weight decay: ``torch.optim.SGD``'s update.

    Per parameter $\theta$ with gradient $g$: $g \leftarrow g + \lambda\theta$; with momentum
    $v \leftarrow g$ on the first step, then $v \leftarrow \beta v + g$, and $g \leftarrow v$;
    finally $\theta \leftarrow \theta - \eta g$ (no dampening, no Nesterov).

    Example:
        >>> p = torch.ones(2)
        >>> SGD([p], lr=0.5, momentum=0.9).step([torch.ones(2)])
        >>> p
        tensor([0.5000, 0.5000])
    """

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        *,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        self.params = list(params)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.buffers: list[torch.Tensor] | None = None

    @torch.no_grad()
    def step(self, grads: Sequence[torch.Tensor]) -> None:
        """Update the parameters in place with ``grads`` (one per parameter, same order)."""
        # multi-tensor (foreach) kernels: one dispatch per operation for all parameters, the
        # same arithmetic per element as the per-tensor ops
        grads = list(grads)
        if self.weight_decay != 0.0:
            grads = list(torch._foreach_add(grads, self.params, alpha=self.weight_decay))
        if self.momentum != 0.0:
            if self.buffers is None:
                self.buffers = [g.clone() for g in grads]
            else:
                torch._foreach_mul_(self.buffers, self.momentum)
                torch._foreach_add_(self.buffers, grads)
            grads = self.buffers
        torch._foreach_add_(self.params, grads, alpha=-self.lr)


def _options(options: FitOptions | None, fields: Mapping[str, Any]) -> FitOptions:
    """``options`` with ``fields`` applied (a :class:`FitOptions` from the fields alone)."""
    if options is None:
        try:
            return FitOptions(**fields)
        except TypeError as err:  # a missing lr / batch_size, or an unknown field
            raise UserError(f"fit needs FitOptions or its fields: {err}") from err
    return dataclasses.replace(options, **fields) if fields else options


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fit(
    model: nn.Module,
    train: Data,
    options: FitOptions | None = None,
    *,
    eval_sets: Mapping[str, Data] | None = None,
    generator: torch.Generator | None = None,
    callback: Callable[[Progress], None] | None = None,
    monitor: MonitorOptions | None = None,
    **fields: Any,
) -> TrainResult:
    r"""Train ``model`` in place with plain SGD at a constant learning rate on cross-entropy.

    Args:
        model: any classifier ``(n, ...) -> logits (n, n_classes)``; moved to the options'
            device. Its floating dtype is the dtype of the data during training.
        train: an ``ImageDataset`` or an ``(x, y)`` pair, ``x`` ``(N, ...)``, ``y`` ``(N,)``
            ``int64``.
        options: learning rate, batch size, epochs, momentum, weight decay, seed, device, ...
            (:class:`~sgdtemp.train.options.FitOptions`).
        eval_sets: name -> data evaluated before training and after every epoch.
        generator: CPU generator of the data order (instead of the options' ``seed``).
        callback: called with a :class:`Progress` after each epoch's evaluation.
        monitor: run the temperature monitor (:class:`sgdtemp.monitor.MonitorOptions`) on a
            probe from the training set; its records are in the result's ``monitor`` (and its
            JSONL log). Off by default: the step loop then pays one ``None`` check.
        **fields: fields of :class:`~sgdtemp.train.options.FitOptions` overriding ``options``,
            for a quick call (``fit(model, (x, y), lr=0.1, batch_size=32, epochs=3)``).

    Returns:
        The :class:`TrainResult`; the model holds the final weights.

    Raises:
        UserError: for bad options or data (before any work).

    Example:
        >>> x = torch.randn(64, 1, 2, 2); y = (x.flatten(1).sum(1) > 0).long()
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> options = FitOptions(lr=0.5, batch_size=16, epochs=3, device="cpu")
        >>> r = fit(model, (x, y), options)
        >>> r.status, r.steps, r.temperature, len(r.epochs)
        ('ok', 12, 0.03125, 4)
        >>> r.epochs[-1]["train"]["loss"] < r.epochs[0]["train"]["loss"]
        True
    """
    o = _options(options, fields)
    if generator is not None and o.seed != 0:
        raise UserError("pass either seed or generator for the data order, not both")
    if generator is not None and generator.device.type != "cpu":
        raise UserError(f"the data-order generator must live on the CPU, got {generator.device}")
    lr, batch_size, epochs, momentum = o.lr, o.batch_size, o.epochs, o.momentum
    weight_decay, replacement = o.weight_decay, o.replacement
    start = time.perf_counter()
    setup = _setup(
        train, eval_sets, batch_size=batch_size, device=o.device, dtype=_float_dtype(model)
    )
    data_gen = generator if generator is not None else torch.Generator().manual_seed(o.seed)
    seed_used = None if generator is not None else o.seed
    eval_batch_size = resolve_eval_batch_size(o.eval_batch_size, setup.device)
    temp = temperature(lr, batch_size, momentum)
    model.to(setup.device)
    x, y, dev = setup.x, setup.y, setup.device
    n = int(y.shape[0])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    watch = None if monitor is None else monitor.attach(model, opt, x, y, meta={"trainer": "fit"})

    def measure(epoch: int, step: int) -> dict[str, Any]:
        metrics = {"train": evaluate(model, x, y, batch_size=eval_batch_size)}
        for name, (ex, ey) in setup.evals.items():
            metrics[name] = evaluate(model, ex, ey, batch_size=eval_batch_size)
        record = epoch_record(epoch, step, metrics)
        if callback is not None:
            callback(Progress(0, epoch, epochs, step, record))
        return record

    records = [measure(0, 0)]
    initial = records[0]["train"]["loss"]
    bound = _bound(o.divergence_bound, initial)
    reason = _divergence(initial, math.inf, 0)
    tracker = None
    if o.stationary is not None:
        tracker = StationaryTracker(o.stationary, lr, setup.steps_per_epoch, o.seed)
        epochs = tracker.max_epochs
        probe = (x[: o.stationary.probe_examples], y[: o.stationary.probe_examples])
    step = 0
    train_seconds = train_cpu = 0.0
    model.train()
    for epoch in range(1, epochs + 1):
        if reason is not None:
            break
        tic, cpu = time.perf_counter(), time.process_time()
        order = _epoch_order(n, batch_size, setup.steps_per_epoch, data_gen, replacement).to(dev)
        worst = torch.full((), -math.inf, device=dev)
        for batch in order:  # (B,) example indices
            loss = F.cross_entropy(model(x.index_select(0, batch)), y.index_select(0, batch))
            opt.step(torch.autograd.grad(loss, params))
            if watch is not None:
                watch.step(batch_size, loss=loss)
            worst = torch.maximum(worst, loss.detach())
            step += 1
            if step % CHECK_EVERY == 0:
                reason = _divergence(worst.item(), bound, step)
                if reason is not None:
                    break
            if tracker is not None and tracker.due(step):
                value = evaluate(model, *probe, batch_size=eval_batch_size)["loss"]
                value += half_sq_norm(params, weight_decay)
                reason = _divergence(value, bound, step)
                if reason is not None:
                    break
                tracker.observe(step, value, lambda: flat_params(params))
        if reason is None:
            reason = _divergence(worst.item(), bound, step)
        _sync(dev)
        train_seconds += time.perf_counter() - tic
        train_cpu += time.process_time() - cpu
        if reason is not None:
            break
        records.append(measure(epoch, step))
        reason = _divergence(records[-1]["train"]["loss"], bound, step)
        if tracker is not None and tracker.finished(step, epoch):
            break
    if watch is not None:
        watch.close()
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    stationary = expected = None
    outcome = None
    if tracker is not None and o.stationary is not None:
        outcome = tracker.outcome(step)
        stationary = outcome.summary
        if reason is None and outcome.mean is not None:
            sets = {"train": (x, y), **setup.evals}
            expected = model_expectations(
                model, params, sets, outcome, o.stationary.expectation_examples, eval_batch_size
            )
    return TrainResult(
        status="ok" if reason is None else "diverged",
        reason=reason,
        temperature=temp,
        lr=float(lr),
        batch_size=batch_size,
        momentum=float(momentum),
        weight_decay=float(weight_decay),
        seed=seed_used,
        replacement=replacement,
        epochs=records,
        steps=step,
        seconds=time.perf_counter() - start,
        train_seconds=train_seconds,
        state=state,
        confounders=temperature_confounders(model),
        device=str(dev),
        divergence_bound=float(bound),
        train_cpu_seconds=train_cpu,
        stationary=stationary,
        expectations=expected,
        stationary_mean=None if outcome is None else outcome.mean,
        stationary_iterates=None if outcome is None else outcome.iterates,
        monitor=None if watch is None else watch.summary(),
    )
