"""What every executor shares: the abstract interface, the lost-worker error, thread limits."""

from __future__ import annotations

import abc
import concurrent.futures as cf
import importlib
import os
import socket
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from sgdtemp.errors import UserError

__all__ = [
    "AbstractExecutor",
    "WorkerLost",
    "check_reachable",
    "chain_future",
    "import_optional",
    "limit_threads",
    "usable_cpus",
]

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class WorkerLost(RuntimeError):
    """The process running a task died (killed, out of memory, its node lost) before answering.

    Executors translate their engine's own error for this (a dead pool process, Ray's
    ``WorkerCrashedError``, Dask's ``KilledWorker``) into this one, so the sweep engine can retry
    the task a bounded number of times whatever runs it.
    """


class AbstractExecutor(cf.Executor, abc.ABC):
    """A ``concurrent.futures.Executor`` with a known parallelism.

    Implementations: ``submit(fn, /, *args, **kwargs) -> Future`` (``fn`` and its arguments must
    pickle), ``shutdown(wait=True, *, cancel_futures=False)``, context-manager use, and
    :attr:`max_workers`, the number of tasks that run at once. A future whose worker died raises
    :class:`WorkerLost`.
    """

    #: Registry name (``local``, ``ray``, ``dask``).
    name: str = ""

    @property
    @abc.abstractmethod
    def max_workers(self) -> int:
        """How many tasks run at the same time."""


def limit_threads(threads: int = 1) -> None:
    """Give this process ``threads`` intra-op threads (torch, OpenMP, MKL, OpenBLAS).

    Sweep workers run with one thread each: runs are then bit-identical whichever executor runs
    them (floating-point reductions split over threads differ with the thread count), and
    ``N`` single-threaded workers on ``N`` cores beat oversubscribed ones.
    """
    for var in _THREAD_VARS:
        os.environ[var] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: ``taskset -c 0,1`` gives 2), at least 1."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):  # no affinity on this platform
        return os.cpu_count() or 1


def import_optional(module: str, *, executor: str, install: str) -> ModuleType:
    """Import an optional dependency or raise a one-line :class:`UserError` saying how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise UserError(
            f"--executor {executor} needs the '{module}' package ({err}); install it with "
            f"`pip install '{install}'` or use --executor local"
        ) from err


def check_reachable(address: str, *, executor: str, hint: str, timeout: float = 3.0) -> None:
    """Fail fast when nothing listens at ``address`` (``host:port`` or ``scheme://host:port``).

    Raises:
        UserError: if the address does not parse or no TCP connection opens within ``timeout``.

    Example:
        >>> check_reachable("127.0.0.1:1", executor="dask", hint="start one")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sgdtemp.errors.UserError: --address 127.0.0.1:1: no dask cluster answers there ...
    """
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise UserError(f"--address {address}: expected HOST:PORT (e.g. 127.0.0.1:6379)")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UserError(
            f"--address {address}: no {executor} cluster answers there ({reason}); {hint}"
        ) from err


def chain_future(
    inner: cf.Future[Any], translate: Callable[[BaseException], BaseException]
) -> cf.Future[Any]:
    """A future that settles like ``inner``, with its exception passed through ``translate``."""
    outer: cf.Future[Any] = cf.Future()
    outer.set_running_or_notify_cancel()

    def settle(done: cf.Future[Any]) -> None:
        if done.cancelled():
            outer.set_exception(cf.CancelledError())
            return
        exc = done.exception()
        if exc is None:
            outer.set_result(done.result())
        else:
            outer.set_exception(translate(exc))

    inner.add_done_callback(settle)
    return outer
