"""The worker side of the sweep engine: run one claimed job, or a fused group, and record it."""

from __future__ import annotations

import collections
import os
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sgdtemp.executors import limit_threads
from sgdtemp.experiments.jobs import TASK_STATUSES, Outcome
from sgdtemp.files import json_safe
from sgdtemp.storage import Store, environment, hostname

__all__ = ["JobResult", "run_job", "run_group"]


@dataclass(frozen=True)
class JobResult:
    key: str
    status: str  # a finished status, or "stale" (the claim no longer held the run)
    seconds: float
    cpu_seconds: float = 0.0
    metrics: Mapping[str, Any] | None = None
    error: str | None = None
    environment: Mapping[str, Any] | None = None
    host: str | None = None
    pid: int | None = None


_WORKER_STORES: collections.OrderedDict[tuple[str, int], Store] = collections.OrderedDict()


def _worker_store(path: str) -> Store:
    """One store connection per worker process and file (a few kept open)."""
    cache_key = (path, os.getpid())
    store = _WORKER_STORES.get(cache_key)
    if store is None:
        store = _WORKER_STORES[cache_key] = Store(path, verify=False)  # the driver verified it
        while len(_WORKER_STORES) > 4:
            _WORKER_STORES.popitem(last=False)[1].close()
    _WORKER_STORES.move_to_end(cache_key)
    return store


def _as_outcome(value: Outcome | Mapping[str, Any]) -> Outcome:
    if isinstance(value, Outcome):
        outcome = value
    elif isinstance(value, Mapping):
        outcome = Outcome(str(value.get("status", "ok")), value)
    else:
        raise TypeError(f"a sweep task returns an Outcome or a mapping, not {type(value).__name__}")
    if outcome.status not in TASK_STATUSES:
        raise ValueError(f"task status must be one of {TASK_STATUSES}, got {outcome.status!r}")
    return outcome


def run_job(
    db: str, key: str, token: str, task: Callable[[], Any], worker_writes: bool
) -> JobResult:
    """Execute one claimed run in a worker and record it (runs in the worker process)."""
    limit_threads(1)
    host, pid = hostname(), os.getpid()
    store = _worker_store(db) if worker_writes else None
    if store is not None and not store.start(
        key, token, pid=pid, host=host, environment=environment()
    ):
        return JobResult(key, "stale", 0.0)
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        outcome = _as_outcome(task())
        status, error = outcome.status, None
        metrics: Mapping[str, Any] | None = json_safe(dict(outcome.metrics))
        env = environment(device=outcome.device)
    except Exception as exc:
        status, metrics, env = "failed", None, environment()
        error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    if store is not None:
        accepted = store.finish(
            key, token, status=status, metrics=metrics, error=error, environment=env
        )
        return JobResult(key, status if accepted else "stale", seconds, cpu)
    return JobResult(key, status, seconds, cpu, metrics, error, env, host, pid)


def run_group(
    db: str, keys: Sequence[str], tokens: Sequence[str], tasks: Sequence[Any], worker_writes: bool
) -> list[JobResult]:
    """Execute claimed runs as one fused task; record each as it is reported (in the worker)."""
    limit_threads(1)
    host, pid = hostname(), os.getpid()
    store = _worker_store(db) if worker_writes else None
    results: dict[int, JobResult] = {}
    members = []
    for i, (key, token) in enumerate(zip(keys, tokens)):
        if store is not None and not store.start(
            key, token, pid=pid, host=host, environment=environment()
        ):
            results[i] = JobResult(key, "stale", 0.0)
        else:
            members.append(i)
    start, cpu_start = time.perf_counter(), time.process_time()
    last = [start, cpu_start]

    def record(i: int, status: str, metrics: Any, error: str | None, env: Any) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        # the group's time is shared out: each report is charged the time since the last one
        seconds, cpu_seconds = now - last[0], cpu - last[1]
        last[:] = [now, cpu]
        key, token = keys[i], tokens[i]
        if store is not None:
            accepted = store.finish(
                key, token, status=status, metrics=metrics, error=error, environment=env
            )
            results[i] = JobResult(key, status if accepted else "stale", seconds, cpu_seconds)
        else:
            results[i] = JobResult(
                key, status, seconds, cpu_seconds, metrics, error, env, host, pid
            )

    def report(j: int, value: Any) -> None:
        i = members[j]
        if i in results:
            raise RuntimeError(f"run {keys[i]} was reported twice")
        try:
            outcome = _as_outcome(value)
            metrics = json_safe(dict(outcome.metrics))
        except Exception as exc:
            record(i, "failed", None, f"{type(exc).__name__}: {exc}", environment())
            return
        record(i, outcome.status, metrics, None, environment(device=outcome.device))

    if members:
        try:
            fused = type(tasks[members[0]]).fuse([tasks[i] for i in members])
            fused(report)
            missing = [i for i in members if i not in results]
            if missing:
                raise RuntimeError(f"the fused task did not report {len(missing)} of its runs")
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
            for i in members:
                if i not in results:
                    record(i, "failed", None, error, environment())
    return [results[i] for i in range(len(keys))]
