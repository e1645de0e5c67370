r"""The temperature monitor: SGD's temperature, noise scale and stability in a running loop.

Each optimizer step costs a read of the optimizer's parameter groups (lr, momentum, dampening,
Nesterov, weight decay: schedulers are followed) and one temperature; every few steps a *probe*
on a fixed batch measures the gradient noise scale with its standard error
(:mod:`sgdtemp.monitor.noise_scale`), $\lambda_{\max}$ against the stability threshold
(:mod:`sgdtemp.monitor.sharpness`) and the noise floor $(T/4)\,\mathrm{tr}\,C$ (theory.md §2.5).
The probe never touches the model's parameters, gradients, modes or random state, so a run is
bit-identical with and without the monitor.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
import types
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from sgdtemp.curvature import ModelLoss
from sgdtemp.errors import UserError
from sgdtemp.monitor._attach import check_options, check_probe, first_line, map_groups, unit_size
from sgdtemp.monitor.noise_scale import NoiseScale, batch_verdict, measure_noise_scale
from sgdtemp.monitor.optimizer import OptimizerSettings, optimizer_param_groups, read_optimizer
from sgdtemp.monitor.records import MonitorRecord
from sgdtemp.monitor.sharpness import Sharpness, measure_sharpness
from sgdtemp.monitor.sinks import Sink

__all__ = ["TemperatureMonitor", "TemperatureWarning", "DEFAULT_BUDGET"]

#: default share of the training time the probes may take (``every=None``)
DEFAULT_BUDGET = 0.02
#: the first probe's cost in probe gradients (one is timed at attach): the per-example pass
#: (~3), ~3 per Hessian-vector product, and the products a cold Lanczos start needs at
#: ``lanczos_tol`` = 1e-2 (10 to 11 on the reference CNN; warm starts then take 4 to 7)
PER_EXAMPLE_COST, HVP_COST, COLD_MATVECS = 3.0, 3.0, 12
#: size of the random part mixed into the Lanczos warm start (relative to the unit vector)
WARM_START_NOISE = 0.1


class TemperatureWarning(UserWarning):
    """A one-line notice from the temperature monitor (each kind is issued once per monitor)."""


class TemperatureMonitor:
    r"""Records SGD's temperature at every step and probes noise scale and stability.

    Attach it to a loop in one of two ways: call :meth:`step` right after each
    ``optimizer.step()`` (before ``scheduler.step()``, so that the lr read is the one used), or
    pass ``hook=True`` (``torch.optim`` optimizers) and it runs as an optimizer step hook.

    Per step it records the lr, momentum, dampening, Nesterov and weight decay read from the
    parameter groups, $T = \eta(1-\tau)/(B(1-\beta))$ (``None`` with a note for Adam & co or
    when groups differ) and the SDE time $\sum\eta_k(1-\tau_k)/(1-\beta_k)$. On probe steps it
    adds, on the fixed ``probe`` batch (in eval mode), $B_{\rm noise}$ with its standard error
    and 95 % interval and the critical-batch verdict, $\eta\lambda_{\max}$ against the
    stability threshold (2, $2(1+\beta)$ with momentum, Cohen et al.) and the noise floor
    $(T/4)\mathrm{tr}\,C$.

    It warns once per kind, in one line (:class:`TemperatureWarning`): $\eta\lambda_{\max}$ at or
    above its threshold, T changing by ``jump_factor`` or more in one step (a scheduler or a
    batch-size change), B above ``batch_factor`` times $B_{\rm noise}$, a probe or a sink failing.
    Every such event is also in the record of its step. Nothing it does stops training.

    **Cost.** A step costs microseconds. A probe costs one per-example gradient pass over the
    probe (``torch.func.vmap``) plus at most ``lanczos_iters`` Hessian-vector products (warm
    started: usually 3 to 7 after the first probe), and a loss pass. With ``every=None`` (the
    default) a probe runs only when it fits: when the monitor's time so far plus the probe's
    expected cost (the last probe's, or for the first one an estimate from one probe gradient
    timed at attach) stays within ``budget`` times the training time so far. So the monitor
    never takes more than about ``budget`` of the run, and probes come as often as that allows
    (for the reference CNN, a 256-example probe costs about 50 training steps of 64 examples
    when warm). ``every=N`` probes at steps N, 2N, ... whatever they cost.

    Args:
        model: the network being trained (its parameters are read, never written).
        optimizer: ``torch.optim.SGD``, :class:`sgdtemp.train.trainer.SGD`, or another
            ``torch.optim`` optimizer (then T is undefined but everything else is measured).
        loss_fn: ``loss_fn(model(x), y) -> scalar`` averaging over its batch.
        probe: ``(x, y)``, a fixed batch of training examples (at least 8; 64 to 512 typical).
        every: probe every this many steps; ``None`` (default): keep within ``budget``.
        budget: share of the training time the monitor may take when ``every`` is ``None``.
        batch_size: examples per step, if not passed to :meth:`step` (required with ``hook``).
        sinks: where records go (:class:`~sgdtemp.monitor.JSONLSink`,
            :class:`~sgdtemp.monitor.TensorBoardSink`, :class:`~sgdtemp.monitor.MLflowSink`).
        log_every: send a record every this many steps (probe steps and T jumps always).
        hook: run as a step hook of a ``torch.optim`` optimizer.
        batch_factor: B above this times the upper end of $B_{\rm noise}$'s 95 % interval warns.
        jump_factor: T changing by this factor or more in one step warns.
        lanczos_iters: most Hessian-vector products per probe.
        lanczos_tol: relative Ritz residual at which Lanczos stops.
        per_example: ``True``: per-example gradients (``vmap``); ``False``: micro-batches;
            ``None``: per-example when the model allows ``vmap``.
        seed: seed of the Lanczos start vectors.
        start_step: optimizer steps already done (a resumed run); records count on from it.
        meta: extra facts for the JSONL log's ``meta`` line (e.g. the model's name).

    Raises:
        UserError: at construction, for an optimizer it cannot read, one without parameter
            groups or with parameters not in the model, a probe the model cannot take, or bad
            options.

    Example:
        >>> import torch
        >>> from sgdtemp.monitor import TemperatureMonitor
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(256, 5, generator=g), torch.randint(0, 3, (256,), generator=g)
        >>> model = torch.nn.Linear(5, 3)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> monitor = TemperatureMonitor(model, opt, torch.nn.functional.cross_entropy,
        ...                              probe=(x[:64], y[:64]), every=5)
        >>> for i in range(10):
        ...     idx = torch.randint(0, 256, (16,), generator=g)
        ...     opt.zero_grad()
        ...     torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        ...     opt.step()
        ...     record = monitor.step(batch_size=16)
        >>> record.step, round(record.temperature, 6), record.stability_threshold
        (10, 0.0625, 3.8)
        >>> record.noise_scale is None or record.noise_scale > 0
        True
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Any,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        *,
        probe: tuple[Tensor, Tensor],
        every: int | None = None,
        budget: float = DEFAULT_BUDGET,
        batch_size: int | None = None,
        sinks: Sequence[Sink] = (),
        log_every: int = 10,
        hook: bool = False,
        batch_factor: float = 2.0,
        jump_factor: float = 1.5,
        lanczos_iters: int = 20,
        lanczos_tol: float = 1e-2,
        per_example: bool | None = None,
        seed: int = 0,
        start_step: int = 0,
        meta: dict[str, Any] | None = None,
    ) -> None:
        start = time.perf_counter()
        check_options(
            every, budget, batch_size, log_every, batch_factor, jump_factor, lanczos_iters,
            lanczos_tol,
        )  # fmt: skip
        groups = optimizer_param_groups(optimizer)
        self.settings: OptimizerSettings = read_optimizer(optimizer)
        x, y = check_probe(model, loss_fn, probe)
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.every, self.budget, self.batch_size = every, float(budget), batch_size
        self.log_every, self.batch_factor = int(log_every), float(batch_factor)
        self.jump_factor = float(jump_factor)
        self.lanczos_iters, self.lanczos_tol = int(lanczos_iters), float(lanczos_tol)
        self.sinks = list(sinks)
        self.model_loss = ModelLoss(
            model, loss_fn, (x, y), hvp_mode="double_backward", batching="loop", taylor=False
        )
        self._group_of = map_groups(model, self.model_loss.names, groups)
        self._sizes = [sum(p.numel() for p in params) for params in groups]
        self.unit_size = unit_size(model, loss_fn, x, y, per_example)
        self._generator = torch.Generator().manual_seed(int(seed))
        self._vector: Tensor | None = None
        self._step = int(start_step)
        self._sde_time: float | None = 0.0
        self._last_temperature: float | None = None
        self._warned: set[str] = set()
        self._sink_failures = [0] * len(self.sinks)
        self.probes: list[MonitorRecord] = []
        self.last: MonitorRecord | None = None
        self.monitor_seconds = 0.0
        self.train_seconds = 0.0
        self._hook: Any = None
        self._emitted = 0
        self._pending_loss: Any = None
        self._closed = False
        if hook:
            if not isinstance(optimizer, torch.optim.Optimizer):
                raise UserError("hook=True needs a torch.optim optimizer; call monitor.step()")
            if batch_size is None:
                raise UserError("hook=True needs batch_size (the hook cannot see the batch)")
            self._hook = optimizer.register_step_post_hook(self._on_optimizer_step)
        self._write_meta(meta or {})
        self._next_cost = self._estimate_first_probe() if every is None else 0.0
        self._last_exit = time.perf_counter()
        self.monitor_seconds += self._last_exit - start

    def _write_meta(self, extra: dict[str, Any]) -> None:
        meta = {
            "optimizer": self.settings.name,
            "probe_examples": self.model_loss.num_examples,
            "parameters": self.model_loss.dim,
            "noise_method": "per-example" if self.unit_size == 1 else "micro-batch",
            "unit_size": self.unit_size,
            "every": self.every,
            "budget": self.budget if self.every is None else None,
            "batch_factor": self.batch_factor,
            "jump_factor": self.jump_factor,
            "lanczos_iters": self.lanczos_iters,
            "lanczos_tol": self.lanczos_tol,
            "torch": torch.__version__,
            **extra,
        }
        self.meta = meta
        for i, sink in enumerate(self.sinks):
            write_meta = getattr(sink, "write_meta", None)
            if write_meta is not None:
                self._guard(i, write_meta, meta)

    # ------------------------------------------------------------------ per step

    def step(
        self,
        batch_size: int | None = None,
        *,
        loss: Any = None,
        settings: OptimizerSettings | None = None,
    ) -> MonitorRecord:
        """Record one optimizer step; call it right after ``optimizer.step()``.

        Args:
            batch_size: examples in this step (default: the constructor's ``batch_size``).
            loss: the step's training loss (a float or a tensor; read only when logged).
            settings: the optimizer's settings for this update from :meth:`read`, when they were
                read before the update because a scheduler moves them before this call
                (Lightning steps its schedulers before ``on_train_batch_end``).

        Returns:
            The step's record (with the probe's fields on probe steps).

        Raises:
            UserError: with ``hook=True`` (the hook records the steps) or without a batch size.
        """
        if self._hook is not None:
            raise UserError(
                "this monitor runs as an optimizer hook (hook=True); do not call step()"
            )
        return self._advance(batch_size, loss, settings)

    def read(self) -> OptimizerSettings:
        """The optimizer's settings now (group sizes are cached: microseconds)."""
        return read_optimizer(self.optimizer, sizes=self._sizes)

    def _on_optimizer_step(self, *_: Any) -> None:
        self._advance(None, None, None)

    def _advance(
        self, batch_size: int | None, loss: Any, given: OptimizerSettings | None
    ) -> MonitorRecord:
        enter = time.perf_counter()
        self.train_seconds += enter - self._last_exit
        size = batch_size if batch_size is not None else self.batch_size
        if size is None:
            raise UserError("pass batch_size to step() or to the monitor")
        if batch_size is not None:
            self.batch_size = batch_size
        self._step += 1
        events: list[str] = []
        try:
            settings = given if given is not None else self.read()
        except UserError as err:  # the optimizer changed under us: keep the last settings
            settings = self.settings
            self._event(
                "optimizer", f"cannot read the optimizer at step {self._step}: {err}", events
            )
        self.settings = settings
        temp = settings.temperature(size)
        eff = settings.effective_lr()
        if self._sde_time is not None:
            self._sde_time = None if eff is None else self._sde_time + eff
        self._check_jump(temp, events)
        ref = settings.reference
        record = MonitorRecord(
            step=self._step,
            lr=settings.lr,
            batch_size=int(size),
            momentum=ref.momentum,
            dampening=ref.dampening,
            nesterov=ref.nesterov,
            weight_decay=ref.weight_decay,
            temperature=temp,
            temperature_note=settings.why_undefined(),
            sde_time=self._sde_time,
            loss=None,
        )
        if self._probe_due(enter):
            probe_start = time.perf_counter()
            record = self._probe(record, events)
            self._next_cost = time.perf_counter() - probe_start  # the next one costs as much
        emit = record.is_probe or bool(events) or self._step % self.log_every == 0
        if emit:
            record = _replace(record, loss=_as_float(loss), events=tuple(events))
            if record.is_probe:
                self.probes[-1] = record  # with the loss and the events, as the sinks got it
            self._emit(record)
        else:
            self._pending_loss = loss
        self.last = record
        self._last_exit = time.perf_counter()
        self.monitor_seconds += self._last_exit - enter
        return record

    def _check_jump(self, temp: float | None, events: list[str]) -> None:
        prev, self._last_temperature = self._last_temperature, temp
        if prev is None or temp is None or prev <= 0.0 or temp <= 0.0:
            return
        ratio = max(temp / prev, prev / temp)
        if ratio >= self.jump_factor:
            self._event(
                "jump",
                f"temperature changed x{temp / prev:.3g} at step {self._step} ({prev:.3g} -> "
                f"{temp:.3g}): a scheduler or batch-size change moves the stationary law",
                events,
            )

    def _probe_due(self, now: float) -> bool:
        """Fixed cadence, or: the next probe (at the last one's cost) still fits in the budget."""
        if self.every is not None:
            return self._step % self.every == 0
        return self.monitor_seconds + self._next_cost <= self.budget * self.train_seconds

    def _estimate_first_probe(self) -> float:
        """Seconds the first probe will take, from one (warm) gradient over the probe."""
        ml = self.model_loss
        try:
            theta = ml.flat_params()
            ml.value_and_grad(theta)  # warm-up: the first functional call allocates
            start = time.perf_counter()
            ml.value_and_grad(theta)
            grad = time.perf_counter() - start
        except Exception:  # the probe's own error handling reports failures later
            return 0.0
        matvecs = min(self.lanczos_iters, COLD_MATVECS)
        return grad * (PER_EXAMPLE_COST + HVP_COST * matvecs + 1.0)

    # ------------------------------------------------------------------ probe

    def _param_vectors(self, settings: OptimizerSettings) -> tuple[Tensor, Tensor]:
        """Per-parameter lr and weight decay, ``(d,)`` each (0 for parameters not optimized)."""
        ml = self.model_loss
        lrs = [settings.groups[g].lr if g >= 0 else 0.0 for g in self._group_of]
        wds = [settings.groups[g].weight_decay if g >= 0 else 0.0 for g in self._group_of]
        sizes = torch.tensor(ml.numels)
        lr = torch.repeat_interleave(torch.tensor(lrs, dtype=torch.float64), sizes)
        wd = torch.repeat_interleave(torch.tensor(wds, dtype=torch.float64), sizes)
        return lr.to(ml.device, ml.dtype), wd.to(ml.device, ml.dtype)

    def _warm_start(self) -> Tensor:
        """Lanczos' start: the last probe's eigenvector plus a little noise, at first random.

        Passing a start vector also makes Lanczos check convergence after every product, so a
        probe spends only the products it needs (a handful when warm).
        """
        ml = self.model_loss
        noise = torch.randn(ml.dim, generator=self._generator, dtype=torch.float64)
        noise = (noise / torch.linalg.vector_norm(noise)).to(ml.device, ml.dtype)
        if self._vector is None:
            return noise
        return self._vector + WARM_START_NOISE * noise

    def _attempt(self, what: str, step: int, events: list[str], fn: Callable[[], Any]) -> Any:
        """Run one part of the probe; a failure is an event (warned once), never an exception."""
        try:
            return fn()
        except Exception as err:  # never stop the user's training for a failed probe
            self._event(
                what, f"{what} failed at step {step} ({first_line(err)}); training goes on", events
            )
            return None

    def _probe(self, record: MonitorRecord, events: list[str]) -> MonitorRecord:
        """The probe's three parts; each may fail alone (e.g. no double backward for a kernel)."""
        start = time.perf_counter()
        settings, step, before = self.settings, record.step, len(events)
        theta = self.model_loss.flat_params()
        lr, wd = self._param_vectors(settings)
        lr_max = float(lr.max())
        scale = (lr / lr_max).sqrt() if lr_max > 0 and not bool((lr == lr_max).all()) else None
        noise: NoiseScale | None = self._attempt(
            "noise scale",
            step,
            events,
            lambda: measure_noise_scale(
                self.model_loss, theta, unit_size=self.unit_size, scale=scale
            ),
        )
        sharp: Sharpness | None = self._attempt(
            "lambda_max",
            step,
            events,
            lambda: measure_sharpness(
                self.model_loss,
                theta,
                lr=lr,
                weight_decay=wd,
                max_iters=self.lanczos_iters,
                tol=self.lanczos_tol,
                v0=self._warm_start(),
                generator=self._generator,
            ),
        )
        probe_loss = self._attempt("probe loss", step, events, lambda: self.model_loss.loss(theta))
        failures = "; ".join(events[before:]) or None
        if noise is None and sharp is None:
            failed = _replace(record, probe_error=failures, probe_seconds=None)
            self.probes.append(failed)
            return failed
        out = _replace(
            record,
            probe_loss=probe_loss,
            probe_error=failures,
            probe_seconds=time.perf_counter() - start,
        )
        if noise is not None:
            out = self._with_noise(out, noise, events)
        if sharp is not None:
            out = self._with_sharpness(out, sharp, settings, events)
        self.probes.append(out)
        return out

    def _with_noise(
        self, record: MonitorRecord, noise: NoiseScale, events: list[str]
    ) -> MonitorRecord:
        temp = record.temperature
        floor = floor_se = None
        if temp is not None:
            floor, floor_se = temp / 4 * noise.trace_cov, temp / 4 * noise.trace_cov_stderr
        verdict = batch_verdict(record.batch_size or 1, noise, self.batch_factor)
        if verdict == "above" and noise.value is not None:
            self._event(
                "batch",
                f"batch size {record.batch_size} is over {self.batch_factor:g}x the noise scale "
                f"B_noise = {noise.value:.3g} (95% {noise.low:.3g} to {noise.high:.3g}) at step "
                f"{record.step}: more examples per step buy little",
                events,
            )
        return _replace(
            record,
            noise_scale=noise.value,
            noise_scale_stderr=noise.stderr,
            noise_scale_low=noise.low,
            noise_scale_high=noise.high,
            trace_cov=noise.trace_cov,
            trace_cov_stderr=noise.trace_cov_stderr,
            grad_norm_sq=noise.grad_norm_sq,
            grad_norm_sq_stderr=noise.grad_norm_sq_stderr,
            noise_method=noise.method,
            noise_units=noise.num_units,
            critical_batch=verdict,
            noise_floor=floor,
            noise_floor_stderr=floor_se,
        )

    def _with_sharpness(
        self,
        record: MonitorRecord,
        sharp: Sharpness,
        settings: OptimizerSettings,
        events: list[str],
    ) -> MonitorRecord:
        if bool(torch.isfinite(sharp.vector).all()):
            self._vector = sharp.vector
        threshold = settings.stability_threshold()
        ratio = None if threshold is None else sharp.lr_lambda_max / threshold
        if ratio is not None and ratio >= 1.0:
            self._event(
                "stability",
                f"lr*lambda_max = {sharp.lr_lambda_max:.3g} >= {threshold:.3g} at step "
                f"{record.step}: past the edge of stability (Cohen et al.), the sharpest "
                "direction oscillates",
                events,
            )
        return _replace(
            record,
            lambda_max=sharp.lambda_max,
            lr_lambda_max=sharp.lr_lambda_max,
            lambda_max_residual=sharp.residual,
            lambda_max_converged=sharp.converged,
            lanczos_matvecs=sharp.num_matvecs,
            stability_threshold=threshold,
            stability_ratio=ratio,
        )

    # ------------------------------------------------------------------ events and sinks

    def _event(self, kind: str, message: str, events: list[str]) -> None:
        events.append(message)
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(message, TemperatureWarning, stacklevel=_user_stacklevel())

    def _guard(self, i: int, fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as err:  # a failing sink never stops training
            self._sink_failures[i] += 1
            kind = f"sink{i}"
            if kind not in self._warned:
                self._warned.add(kind)
                warnings.warn(
                    f"sink {type(self.sinks[i]).__name__} failed ({first_line(err)}); training "
                    "goes on and later records are still tried",
                    TemperatureWarning,
                    stacklevel=_user_stacklevel(),
                )

    def _emit(self, record: MonitorRecord) -> None:
        self._emitted = record.step
        data = record.to_dict()
        for i, sink in enumerate(self.sinks):
            self._guard(i, sink.write, data)

    def summary(self) -> dict[str, Any]:
        """What a training record keeps: the settings, every probe record and the overhead."""
        return {
            "meta": dict(self.meta),
            "steps": self._step,
            "probes": [p.to_dict() for p in self.probes],
            "monitor_seconds": self.monitor_seconds,
            "train_seconds": self.train_seconds,
            "overhead": self.overhead if self.train_seconds > 0 else None,
            "sink_failures": self.sink_failures,
        }

    @property
    def sink_failures(self) -> list[int]:
        """Failed calls per sink."""
        return list(self._sink_failures)

    @property
    def steps(self) -> int:
        """Optimizer steps recorded."""
        return self._step

    @property
    def overhead(self) -> float:
        """The monitor's time over the training time so far (the probes and per-step reads)."""
        return self.monitor_seconds / self.train_seconds if self.train_seconds > 0 else math.inf

    def close(self) -> None:
        """Send the last record if it was not sent, remove the hook, flush and close the sinks."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self._closed:
            return
        self._closed = True
        if self.last is not None and self._emitted != self.last.step:
            self._emit(_replace(self.last, loss=_as_float(self._pending_loss)))
        for i, sink in enumerate(self.sinks):
            self._guard(i, sink.close)

    def __enter__(self) -> TemperatureMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: where the monitor's own frames live: warnings point past them, at the user's line
_INTERNAL = (
    os.path.dirname(__file__),
    os.path.dirname(os.path.dirname(__file__)) + os.sep + "integrations",
    os.path.dirname(torch.optim.__file__),
    os.path.dirname(torch.utils.hooks.__file__),
)


def _user_stacklevel() -> int:
    """``stacklevel`` of the first frame outside the monitor (and torch's optimizer hooks).

    Warnings then point at the user's ``opt.step()`` or ``monitor.step()`` line.
    """
    frame: types.FrameType | None = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    return level


def _as_float(loss: Any) -> float | None:
    """A loss as a float (a tensor is read here, only on logged steps)."""
    if loss is None:
        return None
    return float(loss.detach() if isinstance(loss, Tensor) else loss)


def _replace(record: MonitorRecord, **changes: Any) -> MonitorRecord:
    return dataclasses.replace(record, **changes)
