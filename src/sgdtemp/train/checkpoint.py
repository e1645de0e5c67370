"""Checkpoints: a registry model's weights with everything needed to rebuild it and its data.

A checkpoint is one ``torch.save`` file holding only plain values and tensors (so it loads with
``weights_only=True``)::

    {"format": "sgdtemp-checkpoint", "version": 1, "model_name": "cnn", "model_kwargs": {...},
     "config": {...}, "metrics": {...}, "state_dict": {...}}

``config`` must hold ``in_shape`` and ``n_classes`` (to rebuild the model); ``sgdtemp train``
also stores the dataset name and options (``dataset``, ``data_root``, ``heldout``,
``train_subset``, ``data_seed``) and the training options (``lr``, ``batch_size``, ``momentum``,
``weight_decay``, ``seed``, ``epochs``, ...), so a later tool can rebuild the exact data
splits with ``sgdtemp.data.load_dataset``.

Writes are atomic: the file is written to a temporary name in the same folder and moved over
the target with ``os.replace``, so a reader never sees a half-written checkpoint.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sgdtemp.errors import UserError
from sgdtemp.train.models import MODELS, _build

__all__ = ["CHECKPOINT_FORMAT", "Checkpoint", "save_checkpoint", "load_checkpoint"]

CHECKPOINT_FORMAT = "sgdtemp-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        model: the rebuilt registry model with the saved weights, in eval mode.
        model_name: its :data:`~sgdtemp.train.models.MODELS` name.
        model_kwargs: the builder options.
        config: dataset and training options (always ``in_shape`` and ``n_classes``).
        metrics: what the run measured (e.g. the trainer's record).
    """

    model: nn.Module
    model_name: str
    model_kwargs: dict[str, Any]
    config: dict[str, Any]
    metrics: dict[str, Any]


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    model_name: str,
    model_kwargs: Mapping[str, Any],
    config: Mapping[str, Any],
    metrics: Mapping[str, Any],
) -> Path:
    """Write ``model``'s weights and metadata to ``path`` atomically.

    Args:
        path: target file (its folder must exist).
        model: a model built by ``build_model(model_name, **model_kwargs, in_shape=...,
            n_classes=...)``.
        model_name: registry name.
        model_kwargs: builder options (plain values).
        config: must contain ``in_shape`` and ``n_classes``; plain values only.
        metrics: plain values only.

    Returns:
        The path written.

    Raises:
        UserError: for an unknown model name, a config without ``in_shape`` / ``n_classes``,
            or a folder that cannot be written.

    Example:
        >>> import tempfile, os
        >>> from sgdtemp.train.models import build_model
        >>> m = build_model("mlp", in_shape=(1, 4, 4), n_classes=3, width=5)
        >>> d = tempfile.mkdtemp()
        >>> p = save_checkpoint(os.path.join(d, "c.pt"), m, model_name="mlp",
        ...     model_kwargs={"width": 5}, config={"in_shape": [1, 4, 4], "n_classes": 3},
        ...     metrics={})
        >>> load_checkpoint(p).model_kwargs
        {'width': 5}
    """
    if model_name not in MODELS:
        raise UserError(f"unknown model {model_name!r}; choose one of {', '.join(MODELS)}")
    missing = [k for k in ("in_shape", "n_classes") if k not in config]
    if missing:
        raise UserError(f"checkpoint config needs {', '.join(missing)} to rebuild the model")
    target = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_name": model_name,
        "model_kwargs": dict(model_kwargs),
        "config": {**config, "in_shape": [int(s) for s in config["in_shape"]]},
        "metrics": dict(metrics),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as err:
        raise UserError(f"cannot write checkpoint {target} ({err.strerror})") from err
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_checkpoint(
    path: str | Path,
    *,
    map_location: str | torch.device = "cpu",
    model_name: str | None = None,
) -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint` and rebuild its model.

    Args:
        path: the checkpoint file.
        map_location: device of the loaded weights.
        model_name: if given, the checkpoint must hold this registry model.

    Returns:
        The :class:`Checkpoint`; its model is in eval mode on ``map_location``.

    Raises:
        UserError: if the file is missing, not an sgdtemp checkpoint, of another model, or its
            weights do not fit the rebuilt model.
    """
    source = Path(path)
    if not source.is_file():
        raise UserError(f"checkpoint {source} does not exist; pass the checkpoint.pt of a run")
    try:
        payload = torch.load(source, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError) as err:
        raise UserError(f"{source} is not a readable sgdtemp checkpoint ({err})") from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{source} is not an sgdtemp checkpoint (written by `sgdtemp train`)")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise UserError(
            f"checkpoint {source} has format version {payload.get('version')}; this sgdtemp "
            f"reads version {CHECKPOINT_VERSION}"
        )
    name = payload["model_name"]
    if model_name is not None and name != model_name:
        raise UserError(f"checkpoint {source} holds model {name!r}, not {model_name!r}")
    config, kwargs = payload["config"], payload["model_kwargs"]
    # a throwaway generator: the weights are overwritten, and the global RNG stays untouched
    scratch = torch.Generator().manual_seed(0)
    model = _build(name, config["in_shape"], config["n_classes"], kwargs, scratch)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0:2]
        raise UserError(
            f"checkpoint {source}: weights do not fit model {name} {kwargs} ({' '.join(first)})"
        ) from err
    model.to(map_location).eval()
    return Checkpoint(model, name, dict(kwargs), dict(config), dict(payload["metrics"]))
