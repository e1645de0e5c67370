"""Checkpoints: a registry model's weights with everything needed to rebuild it and its data.

A checkpoint is one ``torch.save`` file holding only plain values and tensors (so it loads with
``weights_only=True``)::

    {"format": "sgdtemp-checkpoint", "version": 2, "model_name": "cnn", "model_kwargs": {...},
     "config": {...}, "metrics": {...}, "state_dict": {...}, "sha256": "..."}

``config`` must hold ``in_shape`` and ``n_classes`` (to rebuild the model); ``sgdtemp train``
also stores the dataset name and options (``dataset``, ``data_root``, ``heldout``,
``train_subset``, ``data_seed``) and the training options (``lr``, ``batch_size``, ``momentum``,
``weight_decay``, ``seed``, ``epochs``, ...), so a later tool can rebuild the exact data
splits with ``sgdtemp.data.load_dataset``.

Writes are atomic: the file is written to a temporary name in the same folder and moved over
the target with ``os.replace``, so a reader never sees a half-written checkpoint.

Integrity. A loaded file is used only when it is whole: the zip archive's CRC-32 of every member
is checked first (``torch.load`` itself does not look at them, and happily reads flipped bytes as
weights), then ``sha256``, a hash of the weights and metadata (:func:`content_digest`), must match
(version 1 files, written before it existed, are checked by CRC only), and every weight must be
finite. A damaged, foreign or diverged file is a one-line :class:`UserError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import warnings
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sgdtemp.errors import UserError
from sgdtemp.files import atomic_writer
from sgdtemp.train.models import MODELS, _build

__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "content_digest",
]

CHECKPOINT_FORMAT = "sgdtemp-checkpoint"
#: Written by :func:`save_checkpoint`; version 2 added the ``sha256`` content hash.
CHECKPOINT_VERSION = 2
#: Versions :func:`load_checkpoint` reads.
READABLE_VERSIONS = (1, 2)


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
    payload["sha256"] = content_digest(payload)
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
            missing, unreadable, damaged (a CRC or content-hash mismatch), not an sgdtemp
            checkpoint, of another model than ``model_name``, if its weights do not fit the
            rebuilt model or are not finite.
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
    _require_finite(source, payload["state_dict"])
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


def content_digest(payload: Mapping[str, Any]) -> str:
    """SHA-256 of a checkpoint payload: its metadata, then every tensor's name, dtype and bytes.

    Args:
        payload: the dict :func:`save_checkpoint` writes (its ``sha256`` entry is left out).

    Returns:
        The hex digest stored as the payload's ``sha256``.
    """
    digest = hashlib.sha256()
    meta = {k: v for k, v in payload.items() if k not in ("state_dict", "sha256")}
    digest.update(json.dumps(meta, sort_keys=True, default=repr).encode())
    for name in sorted(payload["state_dict"]):
        tensor = payload["state_dict"][name]
        if not isinstance(tensor, torch.Tensor):
            digest.update(f"\0{name}\0{tensor!r}".encode())
            continue
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"\0{name}\0{data.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _check_archive(source: Path) -> None:
    """Refuse a file that is not a whole zip archive (``torch.save``'s format): CRCs included."""
    try:
        with source.open("rb") as handle:
            magic = handle.read(4)
    except OSError as err:
        raise UserError(f"checkpoint {source} cannot be read ({err.strerror}); {_FIX}") from err
    try:
        is_zip = zipfile.is_zipfile(source)
    except (zipfile.BadZipFile, ValueError, EOFError):  # a damaged end of archive
        is_zip = False
    if not is_zip and magic != b"PK\x03\x04":
        raise UserError(
            f"checkpoint {source} is not a PyTorch checkpoint file (no torch.save archive); {_FIX}"
        )
    try:
        if not is_zip:
            raise zipfile.BadZipFile("no end of the archive")
        with zipfile.ZipFile(source) as archive:
            bad = archive.testzip()  # reads every member and checks its CRC-32
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error) as err:
        raise UserError(
            f"checkpoint {source} is truncated or damaged ({_one_line(err, 80)}); {_FIX}"
        ) from err
    except (ValueError, NotImplementedError, RuntimeError) as err:
        raise UserError(
            f"checkpoint {source} is damaged (an unreadable archive: {_one_line(err, 80)}); {_FIX}"
        ) from err
    if bad is not None:
        raise UserError(
            f"checkpoint {source} is damaged: its part {bad!r} fails the archive's CRC check; "
            f"{_FIX}"
        )


def _read_payload(source: Path, device: torch.device) -> dict[str, Any]:
    """The checked payload dict of ``source``; every failure is a one-line :class:`UserError`."""
    _check_archive(source)
    try:
        with warnings.catch_warnings():  # torch warns about pickles it then refuses anyway
            warnings.simplefilter("ignore")
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
        if "Weights only load failed" in str(err):
            raise UserError(
                f"checkpoint {source} holds Python objects other than tensors and plain values, "
                f"so it was not written by sgdtemp and is not loaded; {_FIX}"
            ) from err
        raise UserError(
            f"checkpoint {source} is not a PyTorch checkpoint file (no torch.save archive); {_FIX}"
        ) from err
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
        raise UserError(
            f"checkpoint {source} cannot be read ({_one_line(err, 120)}); {_FIX}"
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{source} is not an sgdtemp checkpoint; {_FIX}")
    if payload.get("version") not in READABLE_VERSIONS:
        raise UserError(
            f"checkpoint {source} has format version {payload.get('version')}; this sgdtemp "
            f"reads versions {', '.join(map(str, READABLE_VERSIONS))}: retrain with "
            "`sgdtemp train`"
        )
    kinds = dict(_PAYLOAD_KEYS, sha256=str) if payload["version"] >= 2 else _PAYLOAD_KEYS
    for key, kind in kinds.items():
        if not isinstance(payload.get(key), kind):
            raise UserError(
                f"checkpoint {source} lacks a valid {key!r} entry (damaged or edited); {_FIX}"
            )
    if "sha256" in kinds and content_digest(payload) != payload["sha256"]:
        raise UserError(
            f"checkpoint {source} is damaged or was edited: its content does not match its "
            f"sha256; {_FIX}"
        )
    missing = [k for k in ("in_shape", "n_classes") if k not in payload["config"]]
    if missing:
        raise UserError(
            f"checkpoint {source}: its config lacks {', '.join(missing)}, needed to rebuild "
            f"the model; {_FIX}"
        )
    payload.setdefault("metrics", {})
    if not isinstance(payload["metrics"], dict):
        raise UserError(
            f"checkpoint {source} lacks a valid 'metrics' entry (damaged or edited); {_FIX}"
        )
    return payload


def _require_finite(source: Path, weights: Mapping[str, Any]) -> None:
    """Refuse NaN or infinite weights (a diverged run), naming the first tensor that has them."""
    bad = {
        name: int((~torch.isfinite(t)).sum())
        for name, t in weights.items()
        if isinstance(t, torch.Tensor)
        and (t.is_floating_point() or t.is_complex())
        and not bool(torch.isfinite(t).all())
    }
    if bad:
        name, count = next(iter(bad.items()))
        more = f" and {len(bad) - 1} more tensors" if len(bad) > 1 else ""
        raise UserError(
            f"checkpoint {source} holds non-finite weights ({count} NaN/inf values in {name}"
            f"{more}): the run diverged, so nothing can be measured on it; retrain with a "
            "smaller lr"
        )


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
