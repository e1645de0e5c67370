"""The Ray executor: plain Ray tasks (no Tune), on a running cluster or a local one it starts.

Ray is an optional dependency, imported only when this executor is built. Tasks run with one CPU
each and ``max_retries=0``: retrying a task whose worker died is the sweep engine's job, so a run
is retried the same bounded number of times whichever executor runs it.
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
)

__all__ = ["RayExecutor"]

_HINT = "start one with `ray start --head`, or leave out --address to start a local cluster"
_LOST = (
    "WorkerCrashedError",
    "NodeDiedError",
    "OutOfMemoryError",
    "LocalRayletDiedError",
    "ObjectLostError",
    "OwnerDiedError",
)


def _invoke(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return fn(*args, **kwargs)


class RayExecutor(AbstractExecutor):
    """Run tasks on a Ray cluster.

    Args:
        address: a running cluster (``HOST:PORT`` of its GCS, ``ray://HOST:PORT`` for Ray Client,
            or ``"auto"``). Without it: reuse this process's Ray connection if there is one, or
            start a local cluster with ``max_workers`` CPUs on loopback, which :meth:`shutdown`
            stops.
        max_workers: tasks in flight at once (default: the cluster's CPUs).

    Raises:
        UserError: when ray is not installed or nothing answers at ``address`` (before any work).
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, max_workers: int | None = None):
        ray = import_optional("ray", executor="ray", install="ray")
        self._ray = ray
        self._owns = False
        if address not in (None, "auto"):
            check_reachable(address, executor="ray", hint=_HINT)
        if ray.is_initialized():
            if address not in (None, "auto") and not _same_cluster(ray, address):
                raise UserError(
                    f"--address {address}: this process is already connected to the Ray cluster "
                    f"at {ray.get_runtime_context().gcs_address}"
                )
        elif address is not None:
            try:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
            except Exception as err:  # ray raises ConnectionError, RuntimeError, ...
                raise UserError(f"--address {address}: cannot join a Ray cluster ({err})") from err
            self._owns = True
        else:
            ray.init(
                num_cpus=max_workers,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
                _node_ip_address="127.0.0.1",  # a cluster of this machine: loopback only
            )
            self._owns = True
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self._max_workers = max_workers or max(cpus, 1)
        self._remote = ray.remote(num_cpus=1, max_retries=0)(_invoke)
        self._lost = tuple(getattr(ray.exceptions, name) for name in _LOST)

    @property
    def max_workers(self) -> int:
        """Tasks in flight at once."""
        return self._max_workers

    def _translate(self, exc: BaseException) -> BaseException:
        if isinstance(exc, self._lost):
            return WorkerLost(f"ray worker lost: {type(exc).__name__}: {str(exc).splitlines()[0]}")
        if isinstance(exc, self._ray.exceptions.RayTaskError):
            cause = exc.cause
            return cause if isinstance(cause, BaseException) else exc
        return exc

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        """Run ``fn(*args, **kwargs)`` as a Ray task (arguments travel through cloudpickle)."""
        ref = self._remote.remote(fn, args, kwargs)
        return chain_future(ref.future(), self._translate)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Disconnect (and stop the local cluster this executor started)."""
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns = False


def _same_cluster(ray: Any, address: str) -> bool:
    current = str(ray.get_runtime_context().gcs_address)
    bare = address.split("://", 1)[-1]
    return bare == current or bare.split(":")[-1] == current.split(":")[-1]
