r"""Temperature in your own training loop: T, the gradient noise scale and stability, as it runs.

:class:`TemperatureMonitor` follows a plain PyTorch loop (or the project's trainer, or a
Lightning / ``transformers`` run through :mod:`sgdtemp.integrations`) and records, per step, the
temperature $T = \eta(1-\tau)/(B(1-\beta))$ read from the optimizer and, every few steps on a
fixed probe batch, the gradient noise scale with its standard error, $\eta\lambda_{\max}$ against
the stability threshold and the noise floor. Records go to JSONL, TensorBoard and MLflow sinks;
``sgdtemp monitor LOG.jsonl --out DIR`` draws them.
"""

from __future__ import annotations

from sgdtemp.monitor._monitor import DEFAULT_BUDGET, TemperatureMonitor, TemperatureWarning
from sgdtemp.monitor.noise_scale import (
    NoiseScale,
    batch_verdict,
    measure_noise_scale,
    noise_scale_from_moments,
    noise_scale_from_units,
)
from sgdtemp.monitor.optimizer import GroupSettings, OptimizerSettings, read_optimizer
from sgdtemp.monitor.options import MonitorOptions
from sgdtemp.monitor.records import MonitorLog, MonitorRecord, read_log, scalar_tags
from sgdtemp.monitor.sharpness import Sharpness, measure_sharpness
from sgdtemp.monitor.sinks import JSONLSink, MLflowSink, Sink, TensorBoardSink

__all__ = [
    # the monitor
    "TemperatureMonitor",
    "TemperatureWarning",
    "DEFAULT_BUDGET",
    "MonitorRecord",
    "MonitorOptions",
    # what it reads and measures
    "read_optimizer",
    "OptimizerSettings",
    "GroupSettings",
    "NoiseScale",
    "noise_scale_from_units",
    "noise_scale_from_moments",
    "measure_noise_scale",
    "batch_verdict",
    "Sharpness",
    "measure_sharpness",
    # where records go
    "Sink",
    "JSONLSink",
    "TensorBoardSink",
    "MLflowSink",
    "MonitorLog",
    "read_log",
    "scalar_tags",
]
