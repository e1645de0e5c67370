"""Results store: runs keyed by a hash of their full config, in one SQLite file plus artifacts.

A run's record holds its config, metrics, seed, environment (package versions, device, git
commit) and status (``pending``, ``running``, ``ok``, ``diverged``, ``failed``, ``unstable``).
Workers write through :class:`Store`; the store is the only state shared between the processes
of a sweep. See :mod:`sgdtemp.storage._store` for the lease and attempt rules that make a crashed
sweep resumable, and :mod:`sgdtemp.storage._schema` for the schema and what opening refuses.
"""

from __future__ import annotations

from sgdtemp.storage._env import environment, hostname
from sgdtemp.storage._export import EXPORT_FORMATS, export_runs, flatten_metrics, run_table
from sgdtemp.storage._keys import CODE_VERSION, canonical_json, run_key
from sgdtemp.storage._records import AttemptRecord, Claim, NewRun, RunRecord, RunState
from sgdtemp.storage._schema import FINISHED, STATUSES
from sgdtemp.storage._store import Store, process_owner

__all__ = [
    # store
    "Store",
    "NewRun",
    "RunRecord",
    "AttemptRecord",
    "Claim",
    "RunState",
    "STATUSES",
    "FINISHED",
    "process_owner",
    # keys and environment
    "run_key",
    "canonical_json",
    "CODE_VERSION",
    "environment",
    "hostname",
    # export
    "export_runs",
    "run_table",
    "flatten_metrics",
    "EXPORT_FORMATS",
]
