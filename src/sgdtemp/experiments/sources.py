"""What a sweep's workers train: data sources and model specs, loaded once per worker process.

A run's config names its data and model by a stable label (:func:`describe`); a worker builds
them from picklable recipes (:class:`DatasetSource`, :class:`ModelSpec`) and keeps the loaded
data (two sources) and the evaluation sets built from them (eight) for the runs that follow.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, is_dataclass
from typing import Any

from sgdtemp.experiments.spec import DataOptions

__all__ = [
    "describe",
    "fingerprint",
    "DatasetSource",
    "ModelSpec",
    "materialize",
    "remember",
    "eval_sets",
]


def describe(obj: Any) -> str:
    """A stable label for a model factory or data source (part of each run's config).

    Functions and classes give ``module.qualname``; ``functools.partial`` and dataclass instances
    add their arguments; tensors, arrays and other objects add a hash of their contents.

    Example:
        >>> describe(functools.partial(max, 3))
        'builtins.max(3)'
    """
    if isinstance(obj, functools.partial):
        args = [repr(a) for a in obj.args] + [f"{k}={v!r}" for k, v in obj.keywords.items()]
        return f"{describe(obj.func)}({', '.join(args)})"
    if isinstance(obj, type) or (callable(obj) and hasattr(obj, "__qualname__")):
        return f"{obj.__module__}.{obj.__qualname__}"
    if is_dataclass(obj) and not _holds_arrays(obj):
        return repr(obj)
    return f"{type(obj).__module__}.{type(obj).__qualname__}:{fingerprint(obj)}"


def _holds_arrays(obj: Any) -> bool:
    """Whether a dataclass instance holds tensors or arrays (then its repr is no label)."""
    return any(
        hasattr(v, "shape") or (is_dataclass(v) and not isinstance(v, type) and _holds_arrays(v))
        for v in vars(obj).values()
    )


def fingerprint(obj: Any) -> str:
    """A content hash: array bytes for tensors and arrays (recursively), pickle otherwise."""
    digest = hashlib.sha256()

    def feed(value: Any) -> None:
        if hasattr(value, "detach"):  # torch tensor
            value = value.detach().cpu().numpy()
        if hasattr(value, "tobytes") and hasattr(value, "shape"):
            digest.update(f"{value.dtype}{tuple(value.shape)}".encode())
            digest.update(value.tobytes())
        elif isinstance(value, list | tuple):
            for item in value:
                feed(item)
        elif is_dataclass(value) and not isinstance(value, type):
            digest.update(type(value).__qualname__.encode())
            for item in vars(value).values():
                feed(item)
        else:
            digest.update(pickle.dumps(value))

    feed(obj)
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class DatasetSource:
    """A data set by name (:func:`sgdtemp.data.load_dataset`), loaded once per worker process.

    Example:
        >>> DatasetSource("digits", DataOptions(train_subset=100))().train.x.shape[0]
        100
    """

    name: str
    options: DataOptions = DataOptions()

    def __call__(self) -> Any:
        """Load the splits."""
        from sgdtemp.data import load_dataset

        o = self.options
        return load_dataset(
            self.name,
            root=o.root,
            heldout=o.heldout,
            train_subset=o.train_subset,
            seed=o.seed,
            test_subset=o.test_subset,
        )


@dataclass(frozen=True)
class ModelSpec:
    """A model by name (:func:`sgdtemp.train.build_model`), buildable in any worker."""

    name: str
    in_shape: tuple[int, ...]
    n_classes: int
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, generator: Any = None) -> Any:
        """Build a fresh model, its weights drawn from ``generator`` (a ``torch.Generator``)."""
        from sgdtemp.train import build_model

        return build_model(
            self.name,
            in_shape=self.in_shape,
            n_classes=self.n_classes,
            generator=generator,
            **dict(self.kwargs),
        )


_DATA_CACHE: collections.OrderedDict[str, Any] = collections.OrderedDict()


def materialize(data: Any) -> Any:
    """The data itself; a callable source is called once per process (two kept)."""
    if not callable(data):
        return data
    cache_key = fingerprint(data)
    if cache_key not in _DATA_CACHE:
        _DATA_CACHE[cache_key] = data()
        while len(_DATA_CACHE) > 2:
            _DATA_CACHE.popitem(last=False)
    _DATA_CACHE.move_to_end(cache_key)
    return _DATA_CACHE[cache_key]


def remember(source: Any, data: Any) -> None:
    """Keep ``data`` as what ``source`` loads in this process (the driver loaded it already)."""
    _DATA_CACHE[fingerprint(source)] = data
    while len(_DATA_CACHE) > 2:
        _DATA_CACHE.popitem(last=False)


_EVAL_CACHE: collections.OrderedDict[tuple[int, str, int], Any] = collections.OrderedDict()


def eval_sets(splits: Any, specs: Sequence[str], seed: int) -> dict[str, Any]:
    """The evaluation sets (a corrupted test set is built once per process and data)."""
    from sgdtemp.data import eval_set

    out = {}
    for spec in specs:
        cache_key = (id(splits), spec, seed)
        if cache_key not in _EVAL_CACHE:
            _EVAL_CACHE[cache_key] = eval_set(splits, spec, seed=seed)
            while len(_EVAL_CACHE) > 8:
                _EVAL_CACHE.popitem(last=False)
        out[spec] = _EVAL_CACHE[cache_key]
    return out
