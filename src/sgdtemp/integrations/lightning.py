"""A Lightning callback that runs the temperature monitor and logs to the trainer's loggers.

``Trainer(callbacks=[TemperatureCallback(probe=(x, y), loss_fn=F.cross_entropy)])`` attaches a
:class:`sgdtemp.monitor.TemperatureMonitor` to the module and its (first) optimizer when training
starts, records every optimizer step with the lr it used (read in ``on_before_optimizer_step``:
Lightning steps ``interval="step"`` schedulers before ``on_train_batch_end``), counting
gradient accumulation (the batch size is the batch's length times ``accumulate_grad_batches``
times the world size), and sends the records to
every logger of the trainer (TensorBoard, MLflow, CSV, ...) as ``sgdtemp/<field>`` at the
trainer's global step, plus any extra sinks. ``loss_fn(module(x), y)`` must be the training
loss. Works with ``lightning.pytorch`` and, when that is absent, ``pytorch_lightning``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor

from sgdtemp.errors import UserError
from sgdtemp.monitor import OptimizerSettings, Sink, TemperatureMonitor, scalar_tags

try:
    from lightning.pytorch import Callback
except ImportError:  # the older package name
    from pytorch_lightning import Callback  # type: ignore[assignment]

__all__ = ["TemperatureCallback", "LoggerSink"]


class LoggerSink:
    """Sends records to a Lightning logger's ``log_metrics`` (the logger flushes itself)."""

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    def write(self, record: Mapping[str, Any]) -> None:
        """Log the record's scalars at its step."""
        self.logger.log_metrics(scalar_tags(dict(record)), step=int(record["step"]))

    def close(self) -> None:
        """Nothing to do: Lightning finalizes its loggers."""


def _batch_length(batch: Any) -> int | None:
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.dim() else None
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, list | tuple):
        for item in batch:
            n = _batch_length(item)
            if n is not None:
                return n
    return None


class TemperatureCallback(Callback):
    """Temperature, noise scale and stability of a Lightning run, in its own loggers.

    Args:
        probe: ``(x, y)``, a fixed batch of training examples.
        loss_fn: ``loss_fn(module(x), y)``, the training loss (mean over the batch).
        batch_size: examples per optimizer step (default: the batch's length times
            ``accumulate_grad_batches`` times the world size).
        sinks: extra sinks (e.g. a :class:`sgdtemp.monitor.JSONLSink` for ``sgdtemp monitor``).
        loggers: also send records to the trainer's loggers.
        log_every: record cadence (default: the trainer's ``log_every_n_steps``).
        **options: more :class:`sgdtemp.monitor.TemperatureMonitor` options (``every``,
            ``budget``, ``batch_factor``, ...).

    Attributes:
        monitor: the monitor, once training has started.
    """

    def __init__(
        self,
        probe: tuple[Tensor, Tensor],
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        *,
        batch_size: int | None = None,
        sinks: Sequence[Sink] = (),
        loggers: bool = True,
        log_every: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        self.probe, self.loss_fn, self.batch_size = probe, loss_fn, batch_size
        self.sinks, self.loggers, self.log_every = list(sinks), loggers, log_every
        self.options = options
        self.monitor: TemperatureMonitor | None = None
        self._settings: OptimizerSettings | None = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Attach the monitor (bad input fails here, before the first step)."""
        if not trainer.optimizers:
            raise UserError("the Lightning module has no optimizer to read")
        sinks = list(self.sinks)
        if self.loggers:
            sinks += [LoggerSink(logger) for logger in trainer.loggers]
        log_every = self.log_every or max(int(trainer.log_every_n_steps or 1), 1)
        meta = {"framework": "lightning", "module": type(pl_module).__name__}
        self.monitor = TemperatureMonitor(
            pl_module,
            trainer.optimizers[0],
            self.loss_fn,
            probe=self.probe,
            sinks=sinks,
            log_every=log_every,
            start_step=int(trainer.global_step),
            meta=meta,
            **self.options,
        )

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        """Read the lr this update uses (Lightning moves step schedulers before batch end)."""
        if self.monitor is not None:
            self._settings = self.monitor.read()

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Record the step when the optimizer stepped (not on accumulation-only batches)."""
        if self.monitor is None or self._settings is None:
            return
        settings, self._settings = self._settings, None
        size = self.batch_size
        if size is None:
            length = _batch_length(batch)
            if length is None:
                raise UserError("cannot tell the batch size from the batch; pass batch_size")
            size = length * int(trainer.accumulate_grad_batches) * int(trainer.world_size)
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        loss = loss if isinstance(loss, Tensor | float) else None
        self.monitor.step(batch_size=size, loss=loss, settings=settings)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """Flush the sinks."""
        if self.monitor is not None:
            self.monitor.close()

    def state_dict(self) -> dict[str, Any]:
        """Nothing to checkpoint (the monitor is rebuilt, counting on from the global step)."""
        return {}
