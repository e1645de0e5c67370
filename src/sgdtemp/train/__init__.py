"""Real models: a registry of image classifiers, the clean SGD trainer and checkpoints.

``fit`` trains any ``nn.Module`` with plain constant-learning-rate SGD on in-memory tensors and
returns a frozen :class:`TrainResult` with per-epoch full-pass metrics; ``fit_many`` trains
several learning rates / seeds of one small model at once. :class:`StationarityDetector` says when
a run's train objective has become stationary; :class:`RunningMean` and :class:`Reservoir` keep
its stationary mean and a uniform sample of its iterates. This layer never writes files except
through :func:`save_checkpoint` when the caller invokes it, and never prints.
"""

from __future__ import annotations

from sgdtemp.train._malloc import keep_freed_memory
from sgdtemp.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from sgdtemp.train.models import (
    MODELS,
    TemperatureConfoundWarning,
    build_model,
    init_parameters,
    temperature_confounders,
)
from sgdtemp.train.multi import fit_many, fused_path_applies
from sgdtemp.train.options import FitOptions
from sgdtemp.train.reservoir import Reservoir, ReservoirSample, RunningMean
from sgdtemp.train.stationarity import (
    StationarityCheck,
    StationarityDetector,
    StationarityResult,
    StationarityRule,
)
from sgdtemp.train.trainer import (
    DEFAULT_DIVERGENCE_FACTOR,
    SGD,
    Progress,
    TrainResult,
    evaluate,
    fit,
    resolve_device,
)

__all__ = [
    # models
    "MODELS",
    "build_model",
    "init_parameters",
    "temperature_confounders",
    "TemperatureConfoundWarning",
    # training
    "FitOptions",
    "fit",
    "fit_many",
    "fused_path_applies",
    "evaluate",
    "resolve_device",
    "SGD",
    "Progress",
    "TrainResult",
    "DEFAULT_DIVERGENCE_FACTOR",
    "keep_freed_memory",
    # stationary runs
    "StationarityRule",
    "StationarityDetector",
    "StationarityResult",
    "StationarityCheck",
    "RunningMean",
    "Reservoir",
    "ReservoirSample",
    # checkpoints
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
]
