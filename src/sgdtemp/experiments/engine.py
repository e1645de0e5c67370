r"""The sweep engine: jobs through an executor, each run recorded exactly once in the store.

:func:`execute` runs any list of :class:`Job` (a key, the columns to store and a picklable task
returning an :class:`Outcome`); the training sweeps of :mod:`sgdtemp.experiments.sweep` build
their jobs and call it.

How a sweep runs. The driver registers every run in the :class:`~sgdtemp.storage.Store` (keys
already finished are *skipped*), then keeps ``executor.max_workers`` runs in flight: it *claims*
a run (a lease with a fresh token, see :mod:`sgdtemp.storage`), submits it, and the worker writes
the outcome through the store (``ok``, ``diverged``, ``failed`` with the traceback, or
``unstable``). The driver refreshes the heartbeat of its claims while they run.

Resume rule. Rerunning the same sweep skips finished keys and finishes every other run. A run
left ``running`` by a driver that died is claimed again as soon as that driver's process is gone
(same host), or once its heartbeat is older than ``lease_s`` (other hosts); an abandoned attempt's
late write is discarded because its token no longer holds the run, so every run is recorded
exactly once. A driver's crash costs its runs no attempt, started or not (the attempt rule of
:mod:`sgdtemp.storage`): however often a sweep is killed, a plain rerun finishes it. A run whose
worker died (killed, out of memory) under a live driver is claimed again and resubmitted; after
``max_attempts`` such deaths it is recorded ``failed`` with the reason. A task that *raises* is
recorded ``failed`` at once (the same config would raise again; ``retry_failed`` requeues failed
runs on a rerun). :attr:`SweepSummary.failed_earlier` counts the failed runs a rerun did not
retry, so a caller can say how many are left and how to retry them.

Determinism. Workers run with one intra-op thread (:func:`~sgdtemp.executors.limit_threads`), so
a task that seeds itself gives bit-identical metrics through the ``local``, ``ray`` and ``dask``
executors.

Fused runs. Jobs that carry the same :attr:`Job.group` may run as one task (``fuse`` > 1): the
driver claims up to ``fuse`` of them together, a worker starts each run, builds one task from
theirs (the task class's ``fuse`` classmethod, see :class:`FusableTask`) and records each run the
moment the fused task reports it. Claims, leases, heartbeats and results stay per run, so a group
whose worker dies loses none of the runs it had finished; its unfinished runs are retried one by
one.

This module imports no torch: a worker that only runs the engine starts in a fraction of a second.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import os
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

from sgdtemp.errors import UserError
from sgdtemp.executors import AbstractExecutor, WorkerLost, limit_threads, make_executor
from sgdtemp.files import json_safe
from sgdtemp.storage import FINISHED, NewRun, Store, environment, hostname

__all__ = ["Outcome", "Job", "FusableTask", "Report", "SweepProgress", "SweepSummary", "execute"]

#: Statuses a task may report.
_TASK_STATUSES = ("ok", "diverged", "unstable", "failed")

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
        group: jobs with the same (hashable, not None) group may be fused into one task; their
            tasks must be instances of one :class:`FusableTask` class.
    """

    run: NewRun
    task: Callable[[], Outcome | Mapping[str, Any]] | None
    group: Any = None


#: How a fused task reports run ``i`` of its group: ``report(i, outcome)``.
Report = Callable[[int, "Outcome | Mapping[str, Any]"], None]


@runtime_checkable
class FusableTask(Protocol):
    """A task whose class can run several of its instances as one (see :attr:`Job.group`)."""

    @classmethod
    def fuse(cls, tasks: Sequence[Any]) -> Callable[[Report], None]:
        """One task for ``tasks``: called with ``report``, it reports each task's outcome."""
        ...


@dataclass(frozen=True)
class SweepProgress:
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
        failed_earlier: of the skipped runs, those an earlier invocation recorded ``failed``
            (not retried without ``retry_failed``).
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
    failed_earlier: int = 0

    @property
    def left_failed(self) -> int:
        """Runs of the sweep recorded ``failed`` after this invocation (by it or earlier)."""
        return self.failed + self.failed_earlier

    def counts(self) -> dict[str, int]:
        """``{"total", "ok", "diverged", "failed", "unstable", "skipped", "failed_earlier"}``."""
        return {
            "total": self.total,
            "ok": self.ok,
            "diverged": self.diverged,
            "failed": self.failed,
            "unstable": self.unstable,
            "skipped": self.skipped,
            "failed_earlier": self.failed_earlier,
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


def _run_group(
    db: str, keys: Sequence[str], tokens: Sequence[str], tasks: Sequence[Any], worker_writes: bool
) -> list[_JobResult]:
    """Execute claimed runs as one fused task; record each as it is reported (in the worker)."""
    limit_threads(1)
    host, pid = hostname(), os.getpid()
    store = _worker_store(db) if worker_writes else None
    results: dict[int, _JobResult] = {}
    members = []
    for i, (key, token) in enumerate(zip(keys, tokens)):
        if store is not None and not store.start(
            key, token, pid=pid, host=host, environment=environment()
        ):
            results[i] = _JobResult(key, "stale", 0.0)
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
            results[i] = _JobResult(key, status if accepted else "stale", seconds, cpu_seconds)
        else:
            results[i] = _JobResult(
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
    progress: Callable[[SweepProgress], None] | None = None,
    poll_s: float = 0.5,
    preload: Sequence[str] = ("sgdtemp.experiments.engine",),
    fuse: int = 1,
) -> SweepSummary:
    """Run jobs through an executor, recording each run once in the store; resumable.

    Args:
        jobs: the runs (a repeated key is run once).
        store: the store, or the path of its SQLite file.
        sweep: the sweep name the runs are registered under.
        executor: an executor, or its name (``local``, ``ray``, ``dask``; built here and shut
            down at the end). Default: ``local``.
        workers: parallelism when the executor is built here.
        max_attempts: tries of one run whose worker died before it is recorded ``failed``.
        lease_s: a claim by a driver on another host is stale after this many seconds without
            a heartbeat (drivers refresh theirs every ``lease_s / 4``).
        retry_failed: requeue runs recorded ``failed`` before this invocation.
        worker_writes: workers write their outcome to the store (the default); False: they
            return it and the driver writes it (for workers that cannot reach the file, e.g.
            on other machines, since SQLite's WAL needs one host).
        spec: stored with the sweep's first registration.
        progress: called with a :class:`SweepProgress` after every event.
        poll_s: how often to look at runs held by other drivers.
        preload: modules the workers of a local executor built here import as they start.
        fuse: at most this many jobs of one :attr:`Job.group` run as one fused task (1: every
            job on its own).

    Returns:
        The summary of this invocation.

    Raises:
        UserError: on a bad argument (before any run starts).
    """
    if max_attempts < 1:
        raise UserError(f"max_attempts must be at least 1, got {max_attempts}")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    if not isinstance(fuse, int) or isinstance(fuse, bool) or fuse < 1:
        raise UserError(f"--fuse must be a positive integer (or off), got {fuse!r}")
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
                fuse,
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
        progress: Callable[[SweepProgress], None] | None,
        poll_s: float,
        fuse: int = 1,
    ):
        self.store, self.sweep, self.jobs, self.keys = store, sweep, jobs, keys
        self.executor, self.max_attempts, self.lease_s = executor, max_attempts, lease_s
        self.worker_writes, self.progress, self.poll_s = worker_writes, progress, poll_s
        self.fuse = fuse
        self.db = str(store.path.resolve())
        # each future runs one claimed run, or a fused group of them: [(key, token), ...]
        self.inflight: dict[cf.Future[Any], list[tuple[str, str]]] = {}
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
            failed_earlier=sum(final[k].status == "failed" for k in skipped),
        )

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(
                SweepProgress(
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
                self._claim(self._next(todo))
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
                self.store.heartbeat(t for pairs in self.inflight.values() for _, t in pairs)
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

    def _next(self, todo: collections.deque[str]) -> list[str]:
        """The next key, with up to ``fuse - 1`` more of its group taken out of ``todo``."""
        key = todo.popleft()
        group = self.jobs[key].group
        if self.fuse == 1 or group is None or self.jobs[key].task is None:
            return [key]
        keys = [key]
        for other in list(todo):
            if len(keys) == self.fuse:
                break
            job = self.jobs[other]
            if job.group == group and job.task is not None:
                keys.append(other)
                todo.remove(other)
        return keys

    def _claim(self, keys: list[str]) -> None:
        claimed = []
        for key in keys:
            claim = self.store.claim(key, max_attempts=self.max_attempts, lease_s=self.lease_s)
            if claim is None:
                self._observe(key)
            else:
                claimed.append((key, claim.token))
        if len(claimed) == 1:
            self._submit(*claimed[0])
        elif claimed:
            self._submit_group(claimed)

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
        self.inflight[future] = [(key, token)]

    def _submit_group(self, claimed: list[tuple[str, str]]) -> None:
        keys, tokens = [k for k, _ in claimed], [t for _, t in claimed]
        tasks = [self.jobs[k].task for k in keys]
        try:
            future = self.executor().submit(
                _run_group, self.db, keys, tokens, tasks, self.worker_writes
            )
        except Exception as exc:
            for key, token in claimed:
                self.store.finish(key, token, status="failed", error=f"cannot submit: {exc!r}")
                self._observe(key)
            return
        self.inflight[future] = claimed

    def _settle(self, future: cf.Future[Any]) -> None:
        pairs = self.inflight.pop(future)
        try:
            value = future.result()
        except WorkerLost as exc:  # runs the worker finished before it died stay finished
            for key, token in pairs:
                claim = self.store.retry_lost(key, token, str(exc), max_attempts=self.max_attempts)
                if claim is not None:
                    self._submit(key, claim.token)
                else:
                    self._observe(key)
            return
        except Exception as exc:  # the executor or the job wrapper failed, not the task
            error = f"{type(exc).__name__}: {exc}"
            for key, token in pairs:
                self.store.finish(key, token, status="failed", error=error)
                self._observe(key)
            return
        results: list[_JobResult] = value if isinstance(value, list) else [value]
        for (key, token), result in zip(pairs, results):
            self._settle_one(key, token, result)

    def _settle_one(self, key: str, token: str, result: _JobResult) -> None:
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
        tokens = [token for pairs in self.inflight.values() for _, token in pairs]
        try:
            self.store.release(tokens)
        except Exception:  # the interrupt matters more; stale leases are reclaimed anyway
            pass
