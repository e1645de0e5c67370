"""The records of the results store: runs to register, stored runs, claims and attempts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NewRun", "RunRecord", "AttemptRecord", "Claim", "RunState"]


@dataclass(frozen=True)
class NewRun:
    """A run to register: its key, full config and the columns that index it.

    Attributes:
        key: the run key (:func:`sgdtemp.storage.run_key` of ``config``).
        config: the full configuration (JSON values).
        dataset: data set name (or a label for user data).
        model: model name (or a label for a user factory).
        lr: learning rate.
        batch_size: minibatch size.
        momentum: heavy-ball momentum.
        temperature: ``lr / (batch_size (1 - momentum))`` from :mod:`sgdtemp.theory.temperature`.
        seed: the run's seed.
        status: ``"pending"`` (to be run) or ``"unstable"`` (recorded without running).
        metrics: metrics to store with a run recorded without running.
    """

    key: str
    config: Mapping[str, Any]
    dataset: str | None = None
    model: str | None = None
    lr: float | None = None
    batch_size: int | None = None
    momentum: float | None = None
    temperature: float | None = None
    seed: int | None = None
    status: str = "pending"
    metrics: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class RunRecord:
    """One stored run (the ``runs`` row with its JSON columns parsed, its checksum checked).

    ``attempts`` counts the tries that ran on a worker and ended there (finished, or the worker
    died); a claim abandoned by a driver that stopped is not counted.
    """

    key: str
    sweep: str
    status: str
    dataset: str | None
    model: str | None
    lr: float | None
    batch_size: int | None
    momentum: float | None
    temperature: float | None
    seed: int | None
    config: dict[str, Any]
    metrics: dict[str, Any] | None
    error: str | None
    started_at: str | None
    finished_at: str | None
    host: str | None
    environment: dict[str, Any] | None
    attempts: int


@dataclass(frozen=True)
class AttemptRecord:
    """One claim of a run: who held it, and how it ended (None while open)."""

    token: str
    key: str
    attempt: int
    owner: str
    claimed_at: str
    started_at: str | None
    host: str | None
    pid: int | None
    finished_at: str | None
    outcome: str | None
    error: str | None


@dataclass(frozen=True)
class Claim:
    """A granted claim: write results for ``key`` with ``token``."""

    key: str
    token: str
    attempt: int


@dataclass(frozen=True)
class RunState:
    """The lease state of a run, as the driver sees it."""

    status: str
    token: str | None
    owner: str | None
    heartbeat_at: float | None
    attempts: int
    error: str | None = field(default=None)
