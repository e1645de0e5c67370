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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from sgdtemp.errors import UserError
from sgdtemp.executors import AbstractExecutor, WorkerLost, make_executor
from sgdtemp.experiments._worker import JobResult, run_group, run_job
from sgdtemp.experiments.jobs import (
    FusableTask,
    Job,
    Outcome,
    Report,
    SweepProgress,
    SweepSummary,
)
from sgdtemp.storage import FINISHED, Store

__all__ = ["Outcome", "Job", "FusableTask", "Report", "SweepProgress", "SweepSummary", "execute"]

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
            future = self.executor().submit(run_job, self.db, key, token, task, self.worker_writes)
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
                run_group, self.db, keys, tokens, tasks, self.worker_writes
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
        results: list[JobResult] = value if isinstance(value, list) else [value]
        for (key, token), result in zip(pairs, results):
            self._settle_one(key, token, result)

    def _settle_one(self, key: str, token: str, result: JobResult) -> None:
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
