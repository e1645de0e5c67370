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

import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sgdtemp.errors import UserError
from sgdtemp.files import atomic_writer
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
        with atomic_writer(target, sync=True) as handle:
            torch.save(payload, handle)
    except OSError as err:
        raise UserError(f"cannot write checkpoint {target} ({err.strerror})") from err
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
        UserError: with a one-line message naming the file and the fix, if the file is
            missing, unreadable, not an sgdtemp checkpoint, of another model than
            ``model_name``, or its weights do not fit the rebuilt model.
    """
    source = Path(path)
    try:
        device = torch.device(map_location)
    except (RuntimeError, TypeError) as err:
        raise UserError(
            f"unknown map_location {map_location!r} for checkpoint {source}; use cpu or cuda"
        ) from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"map_location {map_location} asked for checkpoint {source}, but CUDA is not "
            "available; use cpu"
        )
    if not source.exists():
        raise UserError(
            f"checkpoint {source} does not exist; pass the checkpoint.pt that `sgdtemp train` "
            "wrote into its --out folder"
        )
    if not source.is_file():
        raise UserError(f"checkpoint {source} is a folder; pass the checkpoint.pt inside it")
    payload = _read_payload(source, device)
    name = payload["model_name"]
    if model_name is not None and name != model_name:
        raise UserError(
            f"checkpoint {source} was saved for model {name}, not {model_name}: pass "
            f"--model {name} (model_name={name!r}), or a checkpoint of a {model_name} run"
        )
    config, kwargs = payload["config"], payload["model_kwargs"]
    # a throwaway generator: the weights are overwritten, and the global RNG stays untouched
    scratch = torch.Generator().manual_seed(0)
    try:
        model = _build(name, config["in_shape"], config["n_classes"], kwargs, scratch)
    except (TypeError, ValueError, KeyError) as err:  # UserError is a ValueError
        raise UserError(f"checkpoint {source} cannot be rebuilt: {_one_line(err)}") from err
    problem = _mismatch(model.state_dict(), payload["state_dict"])
    if problem is not None:
        raise UserError(
            f"checkpoint {source}: its weights do not fit model {name} {kwargs} ({problem}); "
            "the file was altered or written by another sgdtemp version: retrain with "
            "`sgdtemp train`"
        )
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, TypeError) as err:
        raise UserError(
            f"checkpoint {source}: its weights do not load into model {name} "
            f"({_one_line(err, 120)}); retrain with `sgdtemp train`"
        ) from err
    model.to(device).eval()
    return Checkpoint(model, name, dict(kwargs), dict(config), dict(payload["metrics"]))


_FIX = "pass the checkpoint.pt that `sgdtemp train` wrote"
_PAYLOAD_KEYS = {"model_name": str, "model_kwargs": dict, "config": dict, "state_dict": dict}


def _one_line(err: BaseException, limit: int = 160) -> str:
    """The first non-empty line of an exception's message, shortened to ``limit`` characters."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    text = lines[0] if lines else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_payload(source: Path, device: torch.device) -> dict[str, Any]:
    """The checked payload dict of ``source``; every failure is a one-line :class:`UserError`."""
    try:
        payload = torch.load(source, map_location=device, weights_only=True)
    except zipfile.BadZipFile as err:
        raise UserError(f"checkpoint {source} is truncated or damaged ({err}); {_FIX}") from err
    except RuntimeError as err:
        if "zip archive" not in str(err) and "PytorchStreamReader" not in str(err):
            raise UserError(
                f"checkpoint {source} cannot be read ({_one_line(err, 120)}); {_FIX}"
            ) from err
        raise UserError(
            f"checkpoint {source} is truncated or damaged (not a complete zip archive); {_FIX}"
        ) from err
    except (pickle.UnpicklingError, EOFError) as err:
        if zipfile.is_zipfile(source) and "Weights only load failed" in str(err):
            raise UserError(
                f"checkpoint {source} holds Python objects other than tensors and plain values, "
                f"so it was not written by sgdtemp and is not loaded; {_FIX}"
            ) from err
        raise UserError(
            f"checkpoint {source} is not a PyTorch checkpoint file (no torch.save archive); {_FIX}"
        ) from err
    except (OSError, ValueError) as err:
        raise UserError(
            f"checkpoint {source} cannot be read ({_one_line(err, 120)}); {_FIX}"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{source} is not an sgdtemp checkpoint; {_FIX}")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise UserError(
            f"checkpoint {source} has format version {payload.get('version')}; this sgdtemp "
            f"reads version {CHECKPOINT_VERSION}: retrain with `sgdtemp train`"
        )
    for key, kind in _PAYLOAD_KEYS.items():
        if not isinstance(payload.get(key), kind):
            raise UserError(
                f"checkpoint {source} lacks a valid {key!r} entry (damaged or edited); {_FIX}"
            )
    missing = [k for k in ("in_shape", "n_classes") if k not in payload["config"]]
    if missing:
        raise UserError(
            f"checkpoint {source}: its config lacks {', '.join(missing)}, needed to rebuild "
            f"the model; {_FIX}"
        )
    payload.setdefault("metrics", {})
    return payload


def _mismatch(expected: Mapping[str, Any], saved: Mapping[str, Any]) -> str | None:
    """What differs between a model's ``state_dict`` and saved weights, in a few words."""
    missing = [k for k in expected if k not in saved]
    extra = [k for k in saved if k not in expected]
    wrong = [
        f"{k}: saved {tuple(saved[k].shape)}, model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in saved and (not isinstance(saved[k], torch.Tensor) or saved[k].shape != v.shape)
    ]
    parts = []
    for label, items in (("shape of ", wrong), ("missing ", missing), ("unexpected ", extra)):
        if items:
            more = f" and {len(items) - 1} more" if len(items) > 1 else ""
            parts.append(f"{label}{items[0]}{more}")
    return "; ".join(parts) if parts else None
