"""Executors: where a sweep's runs execute, behind one ``concurrent.futures``-shaped interface.

- ``local`` (:class:`LocalExecutor`, the default): a process pool on this machine that survives
  the death of a worker.
- ``ray`` (:class:`RayExecutor`): Ray tasks on a running cluster (``address``) or on a local
  cluster it starts and stops. Needs ``pip install ray``.
- ``dask`` (:class:`DaskExecutor`): a Dask scheduler (``address``) or a ``LocalCluster`` it
  starts and stops. Needs ``pip install 'dask[distributed]'``.

Every worker runs with one intra-op thread (:func:`limit_threads`), so a run is bit-identical
whichever executor runs it. A future whose worker died raises :class:`WorkerLost`. Ray and Dask are
imported only when their executor is built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sgdtemp.errors import UserError
from sgdtemp.executors._base import (
    AbstractExecutor,
    WorkerLost,
    check_reachable,
    limit_threads,
    usable_cpus,
)
from sgdtemp.executors._dask import DaskExecutor
from sgdtemp.executors._local import LocalExecutor, RemoteTraceback
from sgdtemp.executors._ray import RayExecutor

__all__ = [
    "AbstractExecutor",
    "WorkerLost",
    "RemoteTraceback",
    "LocalExecutor",
    "RayExecutor",
    "DaskExecutor",
    "EXECUTORS",
    "make_executor",
    "limit_threads",
    "check_reachable",
    "usable_cpus",
]


def _local(address: str | None, workers: int | None, preload: Sequence[str]) -> AbstractExecutor:
    if address is not None:
        raise UserError("--address applies to --executor ray or dask, not local; leave it out")
    return LocalExecutor(workers, preload=preload, eager=bool(preload))


def _ray(address: str | None, workers: int | None, preload: Sequence[str]) -> AbstractExecutor:
    return RayExecutor(address, max_workers=workers)


def _dask(address: str | None, workers: int | None, preload: Sequence[str]) -> AbstractExecutor:
    return DaskExecutor(address, max_workers=workers)


#: Executor name → factory ``(address, workers, preload) -> executor``.
EXECUTORS: dict[str, Callable[[str | None, int | None, Sequence[str]], AbstractExecutor]] = {
    "local": _local,
    "ray": _ray,
    "dask": _dask,
}


def make_executor(
    name: str = "local",
    *,
    address: str | None = None,
    workers: int | None = None,
    preload: Sequence[str] = (),
) -> AbstractExecutor:
    """Build an executor by name.

    Args:
        name: ``local``, ``ray`` or ``dask``.
        address: the cluster to join (ray and dask only); None starts a local one.
        workers: parallelism (processes for local, CPUs of a local Ray cluster, workers of a
            Dask ``LocalCluster``, tasks in flight on a cluster given by address).
        preload: modules the local executor's workers import as they start (it then starts
            them at once, so the imports overlap the caller's own preparation).

    Returns:
        The executor; use it as a context manager (or call ``shutdown``) to release it.

    Raises:
        UserError: on an unknown name, a non-positive worker count, a missing optional
            dependency, or an unreachable address, before any work starts.

    Example:
        >>> with make_executor("local", workers=1) as pool:
        ...     pool.submit(sum, [1, 2, 3]).result()
        6
    """
    factory = EXECUTORS.get(name)
    if factory is None:
        raise UserError(f"--executor {name}: unknown; choose one of {', '.join(EXECUTORS)}")
    if workers is not None and workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}")
    return factory(address, workers, preload)
