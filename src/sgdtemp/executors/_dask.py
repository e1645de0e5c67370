"""The Dask executor: ``distributed.Client`` to a scheduler, or a ``LocalCluster`` it starts.

Dask (``dask[distributed]``) is an optional dependency, imported only when this executor is built.
The local cluster has single-threaded worker processes and ``allowed-failures = 0``: a task whose
worker dies fails at once with :class:`~sgdtemp.executors.WorkerLost` and the sweep engine retries
it, as with every executor. (A scheduler given by address keeps its own setting, so a task may be
retried there by Dask first.)
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable
from typing import Any

from sgdtemp.errors import UserError
from sgdtemp.executors._base import (
    AbstractExecutor,
    WorkerLost,
    chain_future,
    check_reachable,
    import_optional,
    usable_cpus,
)

__all__ = ["DaskExecutor"]

_HINT = "start one with `dask scheduler`, or leave out --address to start a LocalCluster"


def _invoke(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return fn(*args, **kwargs)


class DaskExecutor(AbstractExecutor):
    """Run tasks on a Dask cluster.

    Args:
        address: a scheduler (``tcp://HOST:PORT`` or ``HOST:PORT``). Without it, start a
            ``LocalCluster`` of ``max_workers`` single-threaded worker processes (dashboard on a
            random loopback port), which :meth:`shutdown` stops.
        max_workers: tasks in flight at once (default: the cluster's worker threads).

    Raises:
        UserError: when distributed is not installed or nothing answers at ``address``.
    """

    name = "dask"

    def __init__(self, address: str | None = None, *, max_workers: int | None = None):
        distributed = import_optional("distributed", executor="dask", install="dask[distributed]")
        import dask

        self._cluster: Any = None
        if address is not None:
            check_reachable(address, executor="dask", hint=_HINT)
            try:
                self._client = distributed.Client(address, timeout="10s")
            except Exception as err:  # OSError, TimeoutError, ...
                raise UserError(
                    f"--address {address}: cannot join a Dask scheduler ({err})"
                ) from err
        else:
            with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
                self._cluster = distributed.LocalCluster(
                    n_workers=max_workers or usable_cpus(),
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address="127.0.0.1:0",  # no fixed port 8787 to collide on
                )
            self._client = distributed.Client(self._cluster)
        threads = sum(self._client.nthreads().values())
        self._max_workers = max_workers or max(threads, 1)
        self._executor = self._client.get_executor(pure=False)
        self._killed = distributed.KilledWorker

    @property
    def max_workers(self) -> int:
        """Tasks in flight at once."""
        return self._max_workers

    @property
    def address(self) -> str:
        """The scheduler's address."""
        return str(self._client.scheduler.address)

    def _translate(self, exc: BaseException) -> BaseException:
        if isinstance(exc, self._killed):
            return WorkerLost(f"dask worker lost: {exc}")
        return exc

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        """Run ``fn(*args, **kwargs)`` as a Dask task (arguments travel through cloudpickle)."""
        return chain_future(self._executor.submit(_invoke, fn, args, kwargs), self._translate)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Close the client (and the local cluster this executor started)."""
        self._executor.shutdown(wait=wait)
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None
