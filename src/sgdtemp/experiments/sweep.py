r"""Sweeps at any scale: a grid of training runs through an executor, recorded in a store.

Three entry points, one engine:

- :func:`run_spec` runs a :class:`~sgdtemp.experiments.spec.SweepSpec` (a TOML file; what
  ``sgdtemp sweep`` calls) with the package's data sets and models;
- :func:`run` runs a grid of :class:`~sgdtemp.experiments.spec.RunConfig` with *your* model
  factory and data (picklable, so that process, Ray and Dask workers can rebuild them);
- :func:`execute` runs any list of :class:`Job` (a key, the columns to store and a picklable task
  returning an :class:`Outcome`); the other two build jobs and call it.

How a sweep runs. The driver registers every run in the :class:`~sgdtemp.storage.Store` (keys
already finished are *skipped*), then keeps ``executor.max_workers`` runs in flight: it *claims*
a run (a lease with a fresh token, see :mod:`sgdtemp.storage`), submits it, and the worker writes
the outcome through the store (``ok``, ``diverged``, ``failed`` with the traceback, or
``unstable``). The driver refreshes the heartbeat of its claims while they run.

Resume rule. Rerunning the same sweep skips finished keys. A run left ``running`` by a driver
that died is claimed again as soon as that driver's process is gone (same host), or once its
heartbeat is older than ``lease_s`` (other hosts); an abandoned attempt's late write is discarded
because its token no longer holds the run, so every run is recorded exactly once. A run whose
worker died (killed, out of memory) is claimed again and resubmitted; after ``max_attempts``
claims it is recorded ``failed`` with the reason. A task that *raises* is recorded ``failed`` at
once (the same config would raise again; ``retry_failed`` requeues failed runs on a rerun).

Determinism. Workers run with one intra-op thread
(:func:`~sgdtemp.executors.limit_threads`) and every run seeds its model and minibatches from its
own seed, so the same config gives bit-identical metrics through the ``local``, ``ray`` and
``dask`` executors.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import functools
import hashlib
import os
import pickle
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, is_dataclass, replace
from pathlib import Path
from typing import Any

from sgdtemp.errors import UserError
from sgdtemp.executors import AbstractExecutor, WorkerLost, limit_threads, make_executor
from sgdtemp.experiments.spec import (
    SHIFT_DEFAULTS,
    DataOptions,
    Measurements,
    RunConfig,
    Stability,
    SweepSpec,
    check_measurements,
)
from sgdtemp.files import json_safe
from sgdtemp.storage import (
    CODE_VERSION,
    FINISHED,
    NewRun,
    Store,
    environment,
    hostname,
    run_key,
)

__all__ = [
    "Outcome",
    "Job",
    "TRAIN_PRELOAD",
    "Progress",
    "SweepSummary",
    "TrainTask",
    "DatasetSource",
    "ModelSpec",
    "execute",
    "run",
    "run_spec",
    "prepare_spec",
    "describe",
    "measure_shifts",
]

#: Statuses a task may report.
_TASK_STATUSES = ("ok", "diverged", "unstable", "failed")

#: Modules a local worker imports as it starts when it will train models (``torch._dynamo`` is
#: imported by the first ``torch.optim`` optimizer: seconds that would otherwise delay the first
#: run of every worker).
TRAIN_PRELOAD = (
    "sgdtemp.experiments.sweep",
    "torch",
    "torch._dynamo",
    "sgdtemp.train",
    "sgdtemp.data",
    "sgdtemp.curvature",
    "sgdtemp.shift",
)


# ------------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class Outcome:
    """What a task returns: its status and metrics (JSON values).

    Attributes:
        status: ``"ok"`` or ``"diverged"`` (or ``"unstable"`` / ``"failed"``).
        metrics: the run's metrics.
        device: the device the run used, recorded in its environment.
    """

    status: str
    metrics: Mapping[str, Any]
    device: str | None = None


@dataclass(frozen=True)
class Job:
    """One run of a sweep: what to store (``run``) and what to execute (``task``).

    Attributes:
        run: the key, config and columns of the run.
        task: a picklable callable with no arguments returning an :class:`Outcome` (or a
            mapping of metrics, read as ``ok``); None for a run recorded without running
            (``run.status == "unstable"``).
    """

    run: NewRun
    task: Callable[[], Outcome | Mapping[str, Any]] | None


@dataclass(frozen=True)
class Progress:
    """Where a sweep stands (passed to the ``progress`` callback after every event).

    Attributes:
        total: runs in the sweep.
        skipped: runs already finished when it started.
        done: runs finished since it started (failed included).
        running: runs in flight.
        failed: runs recorded ``failed`` since it started.
        waiting: runs held by another live driver (a concurrent sweep).
    """

    total: int
    skipped: int
    done: int
    running: int
    failed: int
    waiting: int


@dataclass(frozen=True)
class SweepSummary:
    """The result of a sweep invocation.

    ``skipped`` counts runs already finished when it started; the other counts are the final
    statuses of the rest, so ``ok + diverged + failed + unstable + skipped == total``.

    Attributes:
        sweep: the sweep name.
        total: runs in the sweep.
        ok: finished ``ok``.
        diverged: stopped for a non-finite or too large loss.
        failed: raised, or lost their worker ``max_attempts`` times.
        unstable: ``lr · λ_max ≥ 2`` (recorded, maybe run, never mixed into claims).
        skipped: already finished before this invocation.
        seconds: wall-clock time of this invocation.
        task_seconds: time the tasks themselves took, summed over the runs executed here.
        task_cpu_seconds: CPU time of the worker processes during those tasks, summed (below
            ``task_seconds`` when other load kept a worker off its core).
    """

    sweep: str
    total: int
    ok: int
    diverged: int
    failed: int
    unstable: int
    skipped: int
    seconds: float
    task_seconds: float
    task_cpu_seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        """``{"total", "ok", "diverged", "failed", "unstable", "skipped"}``."""
        return {
            "total": self.total,
            "ok": self.ok,
            "diverged": self.diverged,
            "failed": self.failed,
            "unstable": self.unstable,
            "skipped": self.skipped,
        }


# ------------------------------------------------------------------------------- worker side


@dataclass(frozen=True)
class _JobResult:
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
        store = _WORKER_STORES[cache_key] = Store(path)
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
    if outcome.status not in _TASK_STATUSES:
        raise ValueError(f"task status must be one of {_TASK_STATUSES}, got {outcome.status!r}")
    return outcome


def _run_job(
    db: str, key: str, token: str, task: Callable[[], Any], worker_writes: bool
) -> _JobResult:
    """Execute one claimed run in a worker and record it (runs in the worker process)."""
    limit_threads(1)
    host, pid = hostname(), os.getpid()
    store = _worker_store(db) if worker_writes else None
    if store is not None and not store.start(
        key, token, pid=pid, host=host, environment=environment()
    ):
        return _JobResult(key, "stale", 0.0)
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
        return _JobResult(key, status if accepted else "stale", seconds, cpu)
    return _JobResult(key, status, seconds, cpu, metrics, error, env, host, pid)


# ------------------------------------------------------------------------------- driver side


def execute(
    jobs: Iterable[Job],
    *,
    store: Store | str | os.PathLike[str],
    sweep: str,
    executor: AbstractExecutor | str | None = None,
    workers: int | None = None,
    max_attempts: int = 3,
    lease_s: float = 120.0,
    retry_failed: bool = False,
    worker_writes: bool = True,
    spec: Mapping[str, Any] | None = None,
    progress: Callable[[Progress], None] | None = None,
    poll_s: float = 0.5,
    preload: Sequence[str] = ("sgdtemp.experiments.sweep",),
) -> SweepSummary:
    """Run jobs through an executor, recording each run once in the store; resumable.

    Args:
        jobs: the runs (a repeated key is run once).
        store: the store, or the path of its SQLite file.
        sweep: the sweep name the runs are registered under.
        executor: an executor, or its name (``local``, ``ray``, ``dask``; built here and shut
            down at the end). Default: ``local``.
        workers: parallelism when the executor is built here.
        max_attempts: claims of one run before a lost worker makes it ``failed``.
        lease_s: a claim by a driver on another host is stale after this many seconds without
            a heartbeat (drivers refresh theirs every ``lease_s / 4``).
        retry_failed: requeue runs recorded ``failed`` before this invocation.
        worker_writes: workers write their outcome to the store (the default); False: they
            return it and the driver writes it (for workers that cannot reach the file, e.g.
            on other machines, since SQLite's WAL needs one host).
        spec: stored with the sweep's first registration.
        progress: called with a :class:`Progress` after every event.
        poll_s: how often to look at runs held by other drivers.
        preload: modules the workers of a local executor built here import as they start.

    Returns:
        The summary of this invocation.

    Raises:
        UserError: on a bad argument (before any run starts).
    """
    if max_attempts < 1:
        raise UserError(f"max_attempts must be at least 1, got {max_attempts}")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    unique: dict[str, Job] = {}
    for job in jobs:
        unique.setdefault(job.run.key, job)
    keys = list(unique)
    name = None if isinstance(executor, AbstractExecutor) else (executor or "local")
    pool: AbstractExecutor | None = executor if isinstance(executor, AbstractExecutor) else None
    if name is not None and name != "local":  # joins the cluster: an unreachable one fails now
        pool = make_executor(name, workers=workers, preload=preload)

    def get_pool() -> AbstractExecutor:  # a local pool starts when there is work for it
        nonlocal pool
        if pool is None:
            pool = make_executor("local", workers=workers, preload=preload)
        return pool

    try:
        with contextlib.ExitStack() as stack:
            db = store if isinstance(store, Store) else stack.enter_context(Store(store))
            driver = _Driver(
                db,
                sweep,
                unique,
                keys,
                get_pool,
                max_attempts,
                lease_s,
                worker_writes,
                progress,
                poll_s,
            )
            summary = driver.run(retry_failed=retry_failed, spec=spec)
    except BaseException as err:
        # After an error or Ctrl-C a local pool built here stops at once (the driver has handed
        # its running runs back to the store).
        if name is not None and pool is not None:
            pool.__exit__(type(err), err, err.__traceback__)
        raise
    if name is not None and pool is not None:
        pool.shutdown(wait=True)
    return summary


class _Driver:
    """The claim / submit / wait loop of one sweep invocation."""

    def __init__(
        self,
        store: Store,
        sweep: str,
        jobs: Mapping[str, Job],
        keys: Sequence[str],
        executor: Callable[[], AbstractExecutor],
        max_attempts: int,
        lease_s: float,
        worker_writes: bool,
        progress: Callable[[Progress], None] | None,
        poll_s: float,
    ):
        self.store, self.sweep, self.jobs, self.keys = store, sweep, jobs, keys
        self.executor, self.max_attempts, self.lease_s = executor, max_attempts, lease_s
        self.worker_writes, self.progress, self.poll_s = worker_writes, progress, poll_s
        self.db = str(store.path.resolve())
        self.inflight: dict[cf.Future[Any], tuple[str, str]] = {}
        self.waiting: set[str] = set()
        self.task_seconds = self.task_cpu_seconds = 0.0
        self.done = self.failed = 0

    def run(self, *, retry_failed: bool, spec: Mapping[str, Any] | None) -> SweepSummary:
        started = time.perf_counter()
        before = self.store.states(self.keys)
        self.store.register(self.sweep, [self.jobs[k].run for k in self.keys], spec=spec)
        if retry_failed:
            failed = [k for k, s in before.items() if s.status == "failed"]
            self.store.requeue(failed)
            for key in failed:
                del before[key]
        skipped = {k for k, s in before.items() if s.status in FINISHED}
        todo = collections.deque(k for k in self.keys if k not in skipped)
        self.skipped = len(skipped)
        try:
            self._loop(todo)
        except BaseException:
            self._abandon()
            raise
        final = self.store.states(self.keys)
        counts = collections.Counter(final[k].status for k in self.keys if k not in skipped)
        return SweepSummary(
            sweep=self.sweep,
            total=len(self.keys),
            ok=counts["ok"],
            diverged=counts["diverged"],
            failed=counts["failed"],
            unstable=counts["unstable"],
            skipped=len(skipped),
            seconds=time.perf_counter() - started,
            task_seconds=self.task_seconds,
            task_cpu_seconds=self.task_cpu_seconds,
        )

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(
                Progress(
                    total=len(self.keys),
                    skipped=self.skipped,
                    done=self.done,
                    running=len(self.inflight),
                    failed=self.failed,
                    waiting=len(self.waiting),
                )
            )

    def _loop(self, todo: collections.deque[str]) -> None:
        beat_every = self.lease_s / 4
        last_beat = last_poll = time.monotonic()
        self._report()
        while todo or self.inflight or self.waiting:
            while todo and len(self.inflight) < self.executor().max_workers:
                self._claim(todo.popleft())
            if self.inflight:
                done, _ = cf.wait(
                    list(self.inflight), timeout=self.poll_s, return_when=cf.FIRST_COMPLETED
                )
                for future in done:
                    self._settle(future)
            elif self.waiting:
                time.sleep(self.poll_s)
            now = time.monotonic()
            if self.waiting and now - last_poll >= self.poll_s:
                last_poll = now
                todo.extend(self._recheck_waiting())
            if self.inflight and now - last_beat >= beat_every:
                last_beat = now
                self.store.heartbeat(token for _, token in self.inflight.values())
            self._report()

    def _finished(self, status: str) -> None:
        self.done += 1
        self.failed += status == "failed"

    def _observe(self, key: str) -> None:
        """Count a run that finished (by whatever hand), or wait for the driver that holds it."""
        state = self.store.states([key])[key]
        if state.status in FINISHED:
            self._finished(state.status)
        else:
            self.waiting.add(key)

    def _claim(self, key: str) -> None:
        claim = self.store.claim(key, max_attempts=self.max_attempts, lease_s=self.lease_s)
        if claim is None:
            self._observe(key)
        else:
            self._submit(key, claim.token)

    def _submit(self, key: str, token: str) -> None:
        job = self.jobs[key]
        task = job.task
        if task is None:  # recorded without running (pending here when another sweep made it)
            self.store.finish(key, token, status=job.run.status, metrics=job.run.metrics)
            self._observe(key)
            return
        try:
            future = self.executor().submit(_run_job, self.db, key, token, task, self.worker_writes)
        except Exception as exc:  # e.g. the task does not pickle for this executor
            self.store.finish(key, token, status="failed", error=f"cannot submit: {exc!r}")
            self._observe(key)
            return
        self.inflight[future] = (key, token)

    def _settle(self, future: cf.Future[Any]) -> None:
        key, token = self.inflight.pop(future)
        try:
            result: _JobResult = future.result()
        except WorkerLost as exc:
            claim = self.store.retry_lost(key, token, str(exc), max_attempts=self.max_attempts)
            if claim is not None:
                self._submit(key, claim.token)
            else:
                self._observe(key)
            return
        except Exception as exc:  # the executor or the job wrapper failed, not the task
            error = f"{type(exc).__name__}: {exc}"
            self.store.finish(key, token, status="failed", error=error)
            self._observe(key)
            return
        if not self.worker_writes and result.status in FINISHED:
            started = self.store.start(
                key,
                token,
                pid=result.pid or 0,
                host=result.host or "",
                environment=result.environment or {},
            )
            accepted = started and self.store.finish(
                key, token, status=result.status, metrics=result.metrics, error=result.error
            )
            result = replace(result, status=result.status if accepted else "stale")
        if result.status == "stale":  # another driver holds the run now
            self._observe(key)
            return
        self.task_seconds += result.seconds
        self.task_cpu_seconds += result.cpu_seconds
        self._finished(result.status)

    def _recheck_waiting(self) -> list[str]:
        """Runs held by other drivers: drop finished ones, return stale ones to claim."""
        states = self.store.states(sorted(self.waiting))
        reclaim = []
        for key, state in states.items():
            if state.status in FINISHED:
                self.waiting.discard(key)
                self._finished(state.status)
            elif state.status == "pending" or self.store.is_stale(state, lease_s=self.lease_s):
                self.waiting.discard(key)
                reclaim.append(key)
        return reclaim

    def _abandon(self) -> None:
        """On an interrupt: hand in-flight claims back (status ``pending``) for a rerun."""
        for future in self.inflight:
            future.cancel()
        tokens = [token for _, token in self.inflight.values()]
        try:
            self.store.release(tokens)
        except Exception:  # the interrupt matters more; stale leases are reclaimed anyway
            pass


# ------------------------------------------------------------------------ training sweeps


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
    return f"{type(obj).__module__}.{type(obj).__qualname__}:{_fingerprint(obj)}"


def _holds_arrays(obj: Any) -> bool:
    """Whether a dataclass instance holds tensors or arrays (then its repr is no label)."""
    return any(
        hasattr(v, "shape") or (is_dataclass(v) and not isinstance(v, type) and _holds_arrays(v))
        for v in vars(obj).values()
    )


def _fingerprint(obj: Any) -> str:
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
            self.name, root=o.root, heldout=o.heldout, train_subset=o.train_subset, seed=o.seed
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


def _materialize(data: Any) -> Any:
    """The data itself; a callable source is called once per process (two kept)."""
    if not callable(data):
        return data
    cache_key = _fingerprint(data)
    if cache_key not in _DATA_CACHE:
        _DATA_CACHE[cache_key] = data()
        while len(_DATA_CACHE) > 2:
            _DATA_CACHE.popitem(last=False)
    _DATA_CACHE.move_to_end(cache_key)
    return _DATA_CACHE[cache_key]


_EVAL_CACHE: collections.OrderedDict[tuple[int, str, int], Any] = collections.OrderedDict()


def _eval_sets(splits: Any, specs: Sequence[str], seed: int) -> dict[str, Any]:
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


@dataclass(frozen=True)
class TrainTask:
    """Train one model on one config, measure it, and return its metrics (runs in a worker).

    The metrics are the record ``sgdtemp train --json`` prints (``status``, ``temperature``,
    ``epochs`` with the train and evaluation-set losses and accuracies per epoch, ``steps``,
    ``seconds``, ...), plus ``curvature`` and ``shift`` when measured (see :func:`_curvature` and
    :func:`_shift`) and ``lr_sharpness`` when the sharpness is known.

    Attributes:
        model_factory: a :class:`ModelSpec`, or a picklable callable with no arguments returning
            a fresh ``nn.Module`` (called under ``torch.random.fork_rng`` seeded with the run's
            seed, so its initialisation is reproducible).
        data: ``DataSplits``, an ``(x, y)`` pair, or a picklable callable returning one
            (called once per worker process: the way to ship large data).
        config: the run's training options.
        eval_sets: evaluation sets (``heldout``, ``test``, ``corrupt:NAME:SEVERITY``; they need
            ``DataSplits``).
        device: the trainer's device.
        replacement: sample minibatches with replacement.
        divergence_bound: loss above which the run counts as diverged (default: the trainer's).
        measure: per-run measurements after training.
        stability: the stability rule; with action ``mark`` an unstable cell is run and
            recorded ``unstable``, its trainer status kept as ``train_status``.
        eval_seed: seed of the corruptions of the evaluation sets.
        checkpoint: where to save the trained weights (named models only), or None.
        labels: extra entries of the record (``dataset``, ``model``, ``model_kwargs``).
    """

    model_factory: Callable[..., Any]
    data: Any
    config: RunConfig
    eval_sets: tuple[str, ...] = ()
    device: str = "cpu"
    replacement: bool = False
    divergence_bound: float | None = None
    measure: Measurements = Measurements()
    stability: Stability = Stability()
    eval_seed: int = 0
    checkpoint: str | None = None
    labels: Mapping[str, Any] = field(default_factory=dict)

    def _model(self) -> Any:
        import torch

        if isinstance(self.model_factory, ModelSpec):
            return self.model_factory(torch.Generator().manual_seed(self.config.seed))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            return self.model_factory()

    def __call__(self) -> Outcome:
        """Train, evaluate, measure; return the outcome."""
        from sgdtemp import train

        train.keep_freed_memory()  # a worker is a training process (see the function)
        data = _materialize(self.data)
        if isinstance(data, tuple):
            if self.eval_sets or self.measure.shift is not None:
                raise UserError(
                    "eval sets and the shift measurement need DataSplits data, not an (x, y) pair"
                )
            train_set, evals = data, {}
        else:
            train_set = data.train
            evals = _eval_sets(data, [s for s in self.eval_sets if s != "train"], self.eval_seed)
        model = self._model()
        c = self.config
        result = train.fit(
            model,
            train_set,
            lr=c.lr,
            batch_size=c.batch_size,
            epochs=c.epochs,
            momentum=c.momentum,
            weight_decay=c.weight_decay,
            eval_sets=evals,
            seed=c.seed,
            device=self.device,
            divergence_bound=self.divergence_bound,
            replacement=self.replacement,
        )
        metrics: dict[str, Any] = {**result.to_dict(), **self.labels}
        if self.measure.curvature is not None:
            metrics["curvature"] = _curvature(self.measure.curvature, model, train_set, result)
        if self.measure.shift is not None:
            metrics["shift"] = _shift(
                self.measure.shift,
                model,
                data,
                result,
                weight_decay=c.weight_decay,
                seed=c.seed,
                eval_sets=[s for s in self.eval_sets if s != "train"],
                eval_seed=self.eval_seed,
            )
        lr_sharpness = self.stability.lr_sharpness(c.lr)
        if lr_sharpness is not None:
            metrics["lr_sharpness"] = lr_sharpness
        if self.checkpoint is not None and isinstance(self.model_factory, ModelSpec):
            metrics["checkpoint"] = self._save(model, metrics)
        status = str(result.status)
        if self.stability.unstable(c.lr):
            metrics["train_status"] = status
            status = "unstable"
        return Outcome(status, metrics, device=str(result.device))

    def _save(self, model: Any, metrics: Mapping[str, Any]) -> str:
        from sgdtemp.train import save_checkpoint

        assert isinstance(self.model_factory, ModelSpec) and self.checkpoint is not None
        spec = self.model_factory
        path = Path(self.checkpoint)
        path.parent.mkdir(parents=True, exist_ok=True)
        config = {
            **{k: v for k, v in self.labels.items() if k != "model_kwargs"},
            **self.config.as_dict(),
            "in_shape": list(spec.in_shape),
            "n_classes": spec.n_classes,
            "model_kwargs": dict(spec.kwargs),
            "eval_sets": list(self.eval_sets),
            "replacement": self.replacement,
            "divergence_bound": self.divergence_bound,
            "temperature": self.config.temperature,
        }
        save_checkpoint(
            path,
            model.cpu(),
            model_name=spec.name,
            model_kwargs=dict(spec.kwargs),
            config=json_safe(config),
            metrics=json_safe(metrics),
        )
        return str(path)


def _curvature(
    options: Mapping[str, Any], model: Any, train_set: Any, result: Any
) -> dict[str, Any]:
    """Hessian trace (Hutchinson) and top eigenvalues (Lanczos) of the trained model's loss.

    The Hessian is that of the mean cross-entropy over the first ``examples`` training images;
    products are double-backward and looped over columns (a fixed formulation, so the numbers
    do not depend on which executor ran them).
    """
    import torch

    from sgdtemp.curvature import HessianOperator, hutchinson_trace, top_eigenvalues

    if result.status != "ok":
        return {"status": "skipped", "reason": f"the run {result.status}"}
    x, y = (train_set.x, train_set.y) if hasattr(train_set, "x") else train_set
    n = min(int(options.get("examples", 1024)), int(x.shape[0]))
    param = next(model.parameters())
    x = x[:n].to(device=param.device, dtype=param.dtype)
    y = y[:n].to(param.device)
    hessian = HessianOperator(
        model,
        torch.nn.functional.cross_entropy,
        (x, y),
        batch_size=int(options.get("batch_size", 256)),
        mode="double_backward",
        batching="loop",
    )
    generator = torch.Generator().manual_seed(int(options.get("seed", 0)))
    trace = hutchinson_trace(hessian, int(options.get("probes", 16)), generator=generator)
    top = top_eigenvalues(hessian, int(options.get("top_k", 1)), generator=generator)
    values = [float(v) for v in top.values]
    return {
        "status": "ok",
        "examples": n,
        "probes": int(options.get("probes", 16)),
        "trace": float(trace.value),
        "trace_stderr": float(trace.stderr),
        "top_eigenvalues": values,
        "lanczos_converged": bool(top.converged),
        "num_matvecs": int(trace.num_matvecs + top.num_matvecs),
        "lr_lambda_max": float(result.lr) * values[0],
    }


def _shift(
    options: Mapping[str, Any],
    model: Any,
    splits: Any,
    result: Any,
    *,
    weight_decay: float,
    seed: int,
    eval_sets: Sequence[str],
    eval_seed: int,
) -> dict[str, Any]:
    r"""The train → eval-set shift of the trained model (:func:`sgdtemp.shift.measure_shift`).

    For each evaluation set: from the trained weights $\theta^*$, descend on the eval objective
    (mean cross-entropy over its first ``examples`` images, the training weight decay, and for the
    proximal objective a pull toward $\theta^*$) to $\tilde\theta^*$, and report the shift
    $s = \theta^* - \tilde\theta^*$, the gap and its quadratic part $\tfrac12 s^\top\tilde H s$
    (:meth:`sgdtemp.shift.ShiftResult.summary`). Options and defaults: ``[measure.shift]`` in
    :mod:`sgdtemp.experiments.spec`. Products are double-backward (a fixed formulation, so the
    numbers do not depend on which executor ran them).

    Returns:
        ``{"status": "ok", "examples": n, EVAL_SET: summary, ...}``, or ``{"status":
        "skipped", "reason": ...}`` for a run that did not train to the end or whose seed is
        not measured.
    """
    if result.status != "ok":
        return {"status": "skipped", "reason": f"the run {result.status}"}
    o = {**SHIFT_DEFAULTS, **options}
    if "seeds" in o and seed not in o["seeds"]:
        return {"status": "skipped", "reason": f"seed {seed} is not in measure.shift.seeds"}
    n = int(o["examples"])
    names = list(o.get("eval_sets") or eval_sets)
    summaries = measure_shifts(
        model,
        splits.train,
        _eval_sets(splits, names, eval_seed).items(),
        examples=n,
        weight_decay=weight_decay,
        seed=int(o["seed"]),
        objective=str(o["objective"]),
        mu=None if o.get("mu") is None else float(o["mu"]),
        method=str(o["method"]),
        batch_size=int(o["batch_size"]),
        grad_tol=float(o["grad_tol"]),
        rel_grad_tol=float(o["rel_grad_tol"]),
        max_iters=int(o["max_iters"]),
        max_cg_iters=int(o["max_cg_iters"]),
        top_k=int(o["top_k"]),
        hvp_mode="double_backward",
    )
    return {"status": "ok", "examples": n, **summaries}


def measure_shifts(
    model: Any,
    train: Any,
    eval_data: Iterable[tuple[str, Any]],
    *,
    examples: int,
    weight_decay: float,
    seed: int,
    **options: Any,
) -> dict[str, Any]:
    """:func:`sgdtemp.shift.measure_shift` from the training set to each evaluation set.

    Both objectives use the first ``examples`` images of their set, moved to the model's device
    and dtype; each measurement draws from a fresh generator seeded with ``seed``.

    Args:
        model: the trained model (its weights are the train minimum).
        train: the training ``ImageDataset``.
        eval_data: ``(name, ImageDataset)`` pairs, consumed one at a time.
        examples: images per objective.
        weight_decay: the training weight decay (both objectives carry it).
        seed: seed of each measurement's generator.
        **options: further keyword arguments of ``measure_shift``.

    Returns:
        ``{name: ShiftResult.summary()}`` in the order of ``eval_data``.
    """
    import torch
    import torch.nn.functional as F

    from sgdtemp.shift import measure_shift

    param = next(model.parameters())

    def head(data: Any) -> tuple[Any, Any]:
        k = min(examples, int(data.x.shape[0]))
        return data.x[:k].to(param.device, param.dtype), data.y[:k].to(param.device)

    train_xy = head(train)
    return {
        name: measure_shift(
            model,
            F.cross_entropy,
            train_xy,
            head(data),
            weight_decay=weight_decay,
            generator=torch.Generator().manual_seed(seed),
            **options,
        ).summary()
        for name, data in eval_data
    }


def _train_job(
    task: TrainTask,
    *,
    dataset: str,
    model: str,
    base: Mapping[str, Any],
    code_version: str,
    artifacts: Path | None,
) -> Job:
    c = task.config
    config = {
        **base,
        "dataset": dataset,
        "model": model,
        "lr": c.lr,
        "batch_size": c.batch_size,
        "epochs": c.epochs,
        "momentum": c.momentum,
        "weight_decay": c.weight_decay,
        "seed": c.seed,
        "eval": list(task.eval_sets),
        "device": task.device,
        "replacement": task.replacement,
        "divergence_bound": task.divergence_bound,
        "measure": task.measure.as_dict(),
    }
    key = run_key(config, code_version=code_version)
    if artifacts is not None:
        task = replace(task, checkpoint=str(artifacts / key / "checkpoint.pt"))
    skip = task.stability.action == "skip" and task.stability.unstable(c.lr)
    new = NewRun(
        key=key,
        config=config,
        dataset=dataset,
        model=model,
        lr=c.lr,
        batch_size=c.batch_size,
        momentum=c.momentum,
        temperature=c.temperature,
        seed=c.seed,
        status="unstable" if skip else "pending",
        metrics=(
            {"lr_sharpness": task.stability.lr_sharpness(c.lr), "train_status": "skipped"}
            if skip
            else None
        ),
    )
    return Job(new, None if skip else task)


def run(
    grid: Iterable[RunConfig],
    model_factory: Callable[[], Any],
    data: Any,
    *,
    store: Store | str | os.PathLike[str],
    sweep: str = "sweep",
    executor: AbstractExecutor | str | None = None,
    workers: int | None = None,
    eval_sets: Sequence[str] = (),
    device: str = "cpu",
    replacement: bool = False,
    divergence_bound: float | None = None,
    measure: Measurements | None = None,
    stability: Stability | None = None,
    model_name: str | None = None,
    data_name: str | None = None,
    max_attempts: int = 3,
    retry_failed: bool = False,
    code_version: str = CODE_VERSION,
    progress: Callable[[Progress], None] | None = None,
) -> SweepSummary:
    """Sweep your own model and data over a grid; every run lands in the store.

    Args:
        grid: the runs (e.g. :func:`~sgdtemp.experiments.spec.iso_temperature_grid`).
        model_factory: picklable, no arguments, returns a fresh ``nn.Module`` (a module-level
            function or a ``functools.partial`` of one; Ray and Dask also take closures).
        data: ``DataSplits``, an ``(x, y)`` pair, or a picklable callable returning one.
        store: the store or its file.
        sweep: the sweep name.
        executor: an executor or its name (default ``local``).
        workers: parallelism when the executor is built here.
        eval_sets: evaluation sets (they need ``DataSplits``).
        device: the trainer's device.
        replacement: sample minibatches with replacement.
        divergence_bound: loss above which a run counts as diverged.
        measure: per-run measurements (default: none).
        stability: the ``lr · λ_max ≥ 2`` rule (default: sharpness unknown).
        model_name: the model's label in the store (default: :func:`describe` of the factory).
        data_name: the data's label in the store (default: :func:`describe` of the data).
        max_attempts: claims of one run before a lost worker makes it ``failed``.
        retry_failed: requeue runs recorded ``failed`` earlier.
        code_version: folded into every key.
        progress: called with a :class:`Progress` after every event.

    Returns:
        The summary.

    Raises:
        UserError: on a bad argument or measurement option, or a shift measurement on
            ``(x, y)`` data (it needs ``DataSplits``), before any run starts.

    Example (not run here: it starts worker processes)::

        import functools, torch
        from sgdtemp.experiments.spec import iso_temperature_grid
        from sgdtemp.train import build_model

        x = torch.randn(64, 1, 2, 2); y = (x.flatten(1).sum(1) > 0).long()
        factory = functools.partial(build_model, "mlp", in_shape=(1, 2, 2), n_classes=2)
        grid = iso_temperature_grid([0.01], [8, 16], epochs=1, seeds=[0, 1])
        if __name__ == "__main__":  # worker processes import this module again
            summary = run(grid, factory, (x, y), store="runs.db", model_name="mlp")
            print(summary.counts())  # {'total': 4, 'ok': 4, ..., 'skipped': 0}
    """
    stability = stability or Stability()
    measure = measure or Measurements()
    if measure.shift is not None and isinstance(data, tuple):
        raise UserError(
            "measure.shift: the shift needs evaluation sets, so DataSplits data, not an (x, y) pair"
        )
    measure = check_measurements(measure, eval_sets)
    model = model_name or describe(model_factory)
    dataset = data_name or describe(data)
    template = TrainTask(
        model_factory,
        data,
        RunConfig(1.0, 1, 0, 1),
        eval_sets=tuple(eval_sets),
        device=device,
        replacement=replacement,
        divergence_bound=divergence_bound,
        measure=measure,
        stability=stability,
    )
    jobs = [
        _train_job(
            replace(template, config=config),
            dataset=dataset,
            model=model,
            base={},
            code_version=code_version,
            artifacts=None,
        )
        for config in grid
    ]
    return execute(
        jobs,
        store=store,
        sweep=sweep,
        executor=executor,
        workers=workers,
        max_attempts=max_attempts,
        retry_failed=retry_failed,
        progress=progress,
        preload=TRAIN_PRELOAD,
    )


def prepare_spec(
    spec: SweepSpec, *, artifacts: Path | None = None, code_version: str = CODE_VERSION
) -> list[Job]:
    """Check a spec against the data and models, and build its jobs (no run starts).

    Loads the data set once (so a missing file, a batch larger than the training set, a bad
    eval set or an unknown model fails here, before any work) and builds one model.

    Args:
        spec: the spec.
        artifacts: the store's artifacts folder (checkpoints go to ``artifacts/KEY/``).
        code_version: folded into every key.

    Returns:
        One job per cell of the grid.

    Raises:
        UserError: naming the spec file, line and key.
    """
    try:
        from sgdtemp.train import MODELS
    except ImportError as err:  # pragma: no cover - the trainer ships with the package
        raise spec.error("model", f"the trainer is not available ({err})") from err
    if spec.model not in MODELS:
        raise spec.error("model", f"unknown model; choose one of {', '.join(MODELS)}")
    source = DatasetSource(spec.dataset, spec.data)
    try:
        splits = source()
    except UserError as err:
        key = "dataset" if "dataset" in str(err) else "data"
        raise spec.error(key, str(err)) from err
    n_train = len(splits.train)
    for config in spec.grid:
        if config.batch_size > n_train:
            raise spec.error(
                "grid.batch_sizes",
                f"batch size {config.batch_size} exceeds the {n_train} training images; "
                f"choose at most {n_train}",
            )
    if "heldout" in spec.eval_sets and len(splits.heldout) == 0:
        raise spec.error("eval", "the heldout set is empty; set [data] heldout or drop it")
    shift = spec.measure.shift
    if shift is not None and "heldout" in shift.get("eval_sets", ()) and len(splits.heldout) == 0:
        raise spec.error(
            "measure.shift.eval_sets", "the heldout set is empty; set [data] heldout or drop it"
        )
    model = ModelSpec(
        spec.model, tuple(splits.train.x.shape[1:]), splits.train.n_classes, spec.model_args
    )
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a confounded model warns in every worker anyway
            model()
    except UserError as err:
        raise spec.error("model_args", str(err)) from err
    except TypeError as err:
        raise spec.error("model_args", str(err)) from err
    _DATA_CACHE[_fingerprint(source)] = splits
    base = {"data": {**vars(spec.data)}, "model_args": dict(spec.model_args)}
    labels = {"dataset": spec.dataset, "model": spec.model, "model_kwargs": dict(spec.model_args)}
    template = TrainTask(
        model,
        source,
        RunConfig(1.0, 1, 0, 1),
        eval_sets=spec.eval_sets,
        device=spec.device,
        replacement=spec.replacement,
        divergence_bound=spec.divergence_bound,
        measure=spec.measure,
        stability=spec.stability,
        eval_seed=spec.data.seed,
        labels=labels,
    )
    return [
        _train_job(
            replace(template, config=config),
            dataset=spec.dataset,
            model=spec.model,
            base=base,
            code_version=code_version,
            artifacts=artifacts if spec.checkpoints else None,
        )
        for config in spec.grid
    ]


def run_spec(
    spec: SweepSpec | str | Path,
    *,
    store: Store | str | os.PathLike[str],
    executor: AbstractExecutor | str | None = None,
    workers: int | None = None,
    max_attempts: int = 3,
    retry_failed: bool = False,
    progress: Callable[[Progress], None] | None = None,
) -> SweepSummary:
    """Run a sweep spec (a :class:`SweepSpec` or a TOML file) into the store.

    Args:
        spec: the spec or its file.
        store: the store or its file.
        executor: an executor or its name (default ``local``).
        workers: parallelism when the executor is built here.
        max_attempts: claims of one run before a lost worker makes it ``failed``.
        retry_failed: requeue runs recorded ``failed`` earlier.
        progress: called with a :class:`Progress` after every event.

    Returns:
        The summary.

    Raises:
        UserError: for an invalid spec or data, before any run starts.
    """
    if not isinstance(spec, SweepSpec):
        from sgdtemp.experiments.spec import load_spec

        spec = load_spec(spec)
    path = store.path if isinstance(store, Store) else Path(store)
    jobs = prepare_spec(spec, artifacts=path.parent / f"{path.stem}.artifacts")
    return execute(
        jobs,
        store=store,
        sweep=spec.name,
        executor=executor,
        workers=workers,
        max_attempts=max_attempts,
        retry_failed=retry_failed,
        spec=spec.to_dict(),
        progress=progress,
        preload=TRAIN_PRELOAD,
    )
