"""A ``transformers`` ``TrainerCallback`` that runs the temperature monitor.

``Trainer(..., callbacks=[TemperatureCallback(probe=collator(examples))])`` attaches a
:class:`sgdtemp.monitor.TemperatureMonitor` when training begins and records every optimizer
step from ``on_optimizer_step`` (after ``optimizer.step()``, before the scheduler moves the lr)
with $B$ = ``per_device_train_batch_size`` x ``gradient_accumulation_steps`` x world size.

The probe is a batch as the model takes it (a dict with ``labels``, e.g. the data collator's
output for 64 training examples): the loss is the model's own ``model(**batch).loss`` (a
sequence's per-example loss is its mean over its tokens). An ``(x, y)`` pair with ``loss_fn`` works
too. Records go to ``sinks``; with ``sinks="auto"`` (the default) they follow ``report_to``:
TensorBoard event files under ``$TENSORBOARD_LOGGING_DIR`` or ``<output_dir>/runs/sgdtemp``
(beside the Trainer's own runs) and the MLflow run the Trainer opened.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from transformers import TrainerCallback

from sgdtemp.errors import UserError
from sgdtemp.monitor import MLflowSink, Sink, TemperatureMonitor, TensorBoardSink

__all__ = ["TemperatureCallback", "BatchLoss"]


class BatchLoss(nn.Module):
    """``model(**batch[idx]).loss`` as a module of example indices (the monitor's probe view).

    The monitor evaluates ``loss_fn(module(x), y)`` on ``x`` = example indices; this module
    slices every tensor of the batch whose first axis has the batch's length, runs the model
    and returns its loss, so per-example and micro-batch gradients take the model's own loss.

    Args:
        model: a ``transformers`` model (or any module taking the batch's keys and returning an
            object with ``loss``).
        batch: the probe batch, tensors of ``n`` examples along their first axis.
    """

    def __init__(self, model: nn.Module, batch: Mapping[str, Any]) -> None:
        super().__init__()
        lengths = {v.shape[0] for v in batch.values() if isinstance(v, Tensor) and v.dim()}
        if len(lengths) != 1:
            raise UserError("the probe batch's tensors must share their first (example) axis")
        self.model = model
        self.size = lengths.pop()
        self.batch = dict(batch)

    def forward(self, idx: Tensor) -> Tensor:
        """The model's loss on the examples ``idx`` (shape ``(1,)``)."""
        sub = {
            k: v[idx] if isinstance(v, Tensor) and v.dim() and v.shape[0] == self.size else v
            for k, v in self.batch.items()
        }
        out = self.model(**sub)
        loss = out.get("loss") if isinstance(out, Mapping) else getattr(out, "loss", None)
        if loss is None:
            raise UserError("the model returned no loss: the probe batch needs its labels")
        return loss.reshape(1)


def _model_loss(output: Tensor, target: Tensor) -> Tensor:
    """The loss :class:`BatchLoss` already computed (the target is a placeholder)."""
    return output.sum()


def _unwrap(optimizer: Any) -> Any:
    """The torch optimizer inside accelerate's ``AcceleratedOptimizer``."""
    try:
        from accelerate.optimizer import AcceleratedOptimizer
    except ImportError:  # pragma: no cover - transformers' Trainer requires accelerate
        return optimizer
    return optimizer.optimizer if isinstance(optimizer, AcceleratedOptimizer) else optimizer


def _report_to(args: Any) -> list[str]:
    value = args.report_to or []
    return [value] if isinstance(value, str) else list(value)


class TemperatureCallback(TrainerCallback):
    """Temperature, noise scale and stability of a ``transformers`` Trainer run.

    Args:
        probe: a batch dict with labels (the model computes its loss), or ``(x, y)`` with
            ``loss_fn``.
        loss_fn: ``loss_fn(model(x), y)`` for an ``(x, y)`` probe.
        sinks: ``"auto"`` (follow ``report_to``: TensorBoard, MLflow) or a list of sinks.
        jsonl: also write a JSONL log here (for ``sgdtemp monitor``).
        batch_size: examples per optimizer step (default: from the training arguments).
        log_every: record cadence (default: ``logging_steps``).
        **options: more :class:`sgdtemp.monitor.TemperatureMonitor` options.

    Attributes:
        monitor: the monitor, once training has begun.
    """

    def __init__(
        self,
        probe: Mapping[str, Any] | tuple[Tensor, Tensor],
        *,
        loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        sinks: str | Sequence[Sink] = "auto",
        jsonl: str | os.PathLike[str] | None = None,
        batch_size: int | None = None,
        log_every: int | None = None,
        **options: Any,
    ) -> None:
        if isinstance(probe, Mapping) == (loss_fn is not None):
            raise UserError("pass a batch dict as probe, or an (x, y) probe with loss_fn")
        if isinstance(sinks, str) and sinks != "auto":
            raise UserError(f"sinks must be 'auto' or a list of sinks, got {sinks!r}")
        self.probe, self.loss_fn, self.sinks, self.jsonl = probe, loss_fn, sinks, jsonl
        self.batch_size, self.log_every, self.options = batch_size, log_every, options
        self.monitor: TemperatureMonitor | None = None
        self._size = 0

    def _auto_sinks(self, args: Any) -> list[Sink]:
        targets = _report_to(args)
        sinks: list[Sink] = []
        if "tensorboard" in targets or "all" in targets:
            folder = os.environ.get("TENSORBOARD_LOGGING_DIR") or os.path.join(
                args.output_dir, "runs", "sgdtemp"
            )
            sinks.append(TensorBoardSink(folder))
        if "mlflow" in targets or "all" in targets:
            import mlflow

            if mlflow.active_run() is not None:  # opened by the Trainer's MLflowCallback
                sinks.append(MLflowSink())
        return sinks

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Attach the monitor (bad input fails here, before the first step)."""
        model, optimizer = kwargs.get("model"), kwargs.get("optimizer")
        if model is None or optimizer is None:
            raise UserError("the Trainer passed no model or optimizer to the callback")
        sinks = self._auto_sinks(args) if isinstance(self.sinks, str) else list(self.sinks)
        if self.jsonl is not None:
            from sgdtemp.monitor import JSONLSink

            sinks.append(JSONLSink(self.jsonl))
        loss_fn: Callable[[Tensor, Tensor], Tensor]
        if isinstance(self.probe, Mapping):
            device = next(model.parameters()).device
            batch = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in self.probe.items()}
            wrapper = BatchLoss(model, batch)
            n = int(wrapper.size)
            module: nn.Module = wrapper
            probe = (torch.arange(n, device=device), torch.zeros(n, device=device))
            loss_fn = _model_loss
        else:
            assert self.loss_fn is not None  # checked in __init__
            module, probe, loss_fn = model, self.probe, self.loss_fn
        self._size = self.batch_size or int(
            args.train_batch_size * args.gradient_accumulation_steps * args.world_size
        )
        log_every = self.log_every or max(int(args.logging_steps), 1)
        self.monitor = TemperatureMonitor(
            module,
            _unwrap(optimizer),
            loss_fn,
            probe=probe,
            sinks=sinks,
            log_every=log_every,
            start_step=int(state.global_step),
            meta={"framework": "transformers", "model": type(model).__name__},
            **self.options,
        )

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Record the step (the lr read is the one this step used)."""
        if self.monitor is not None:
            self.monitor.step(batch_size=self._size)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Flush and close the sinks."""
        if self.monitor is not None:
            self.monitor.close()
