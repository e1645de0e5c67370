"""Run keys: a stable hash of a run's full configuration and the code version."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from sgdtemp.errors import UserError

__all__ = ["CODE_VERSION", "canonical_json", "run_key"]


def _code_version() -> str:
    from sgdtemp import __version__

    return f"sgdtemp {__version__}"


#: The code version folded into every key: the package version (not the git commit, which is
#: recorded in each run's environment instead, so that resuming after an unrelated edit does not
#: re-run a whole sweep).
CODE_VERSION = _code_version()


def _check(obj: Any, where: str) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _check(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_check(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        raise UserError(f"config value {where} is {obj}; a run config must hold finite numbers")
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    raise UserError(
        f"config value {where} has type {type(obj).__name__}; a run config holds only "
        "JSON values (str, int, float, bool, None, lists and tables of them)"
    )


def canonical_json(obj: Any) -> str:
    """JSON text that is the same for equal configs: sorted keys, no spaces, tuples as lists.

    Args:
        obj: JSON-like data (mappings, lists, tuples, str, int, float, bool, None).

    Returns:
        The canonical JSON text.

    Raises:
        UserError: if the data holds a non-finite float or a non-JSON type.

    Example:
        >>> canonical_json({"b": (1, 2.5), "a": None})
        '{"a":null,"b":[1,2.5]}'
    """
    return json.dumps(_check(obj, "config"), sort_keys=True, separators=(",", ":"))


def run_key(config: Mapping[str, Any], *, code_version: str = CODE_VERSION) -> str:
    """The key of a run: 32 hex digits of SHA-256 over its canonical config and the code version.

    Two runs share a key exactly when their configs (seed included) and code versions are equal,
    whatever sweep they belong to.

    Args:
        config: the run's full configuration (JSON values only).
        code_version: the code version folded into the key (default: the package version).

    Returns:
        The key.

    Example:
        >>> k = run_key({"lr": 0.1, "batch_size": 32, "seed": 0})
        >>> len(k), k == run_key({"seed": 0, "batch_size": 32, "lr": 0.1})
        (32, True)
        >>> k == run_key({"lr": 0.1, "batch_size": 32, "seed": 1})
        False
    """
    payload = canonical_json({"config": config, "code_version": code_version})
    return hashlib.sha256(payload.encode()).hexdigest()[:32]
