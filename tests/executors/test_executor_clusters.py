"""Ray and Dask executors on real loopback clusters (shared per session, see conftest.py)."""

from __future__ import annotations

import time

import pytest

from sgdtemp.errors import UserError
from sgdtemp.executors import DaskExecutor, RayExecutor, WorkerLost, make_executor
from sgdtemp.executors._toy import TorchToyTask, kill_self, pid_and_sleep

pytestmark = pytest.mark.slow


@pytest.fixture(params=["ray", "dask"])
def executor(request):
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
        pool = RayExecutor()  # reuses this process's connection
    else:
        pool = DaskExecutor(request.getfixturevalue("dask_cluster"))
    with pool:
        yield pool


def test_results_exceptions_and_threads(executor):
    assert executor.max_workers == 2
    futures = [executor.submit(pow, 2, k) for k in range(4)]
    assert [f.result(timeout=60) for f in futures] == [1, 2, 4, 8]
    with pytest.raises(ValueError, match="boom"):  # a task's own exception comes back as is
        executor.submit(int, "boom").result(timeout=60)
    result = executor.submit(TorchToyTask(steps=1, n=64, width=8)).result(timeout=120)
    assert result["threads"] == 1 or executor.name == "ray"  # ray workers: OMP_NUM_THREADS=1


def test_closures_travel_by_value(executor):
    offset = 5
    assert executor.submit(lambda x: x + offset, 1).result(timeout=60) == 6


def test_dead_worker_is_reported_as_worker_lost(executor):
    with pytest.raises(WorkerLost):
        executor.submit(kill_self).result(timeout=120)
    deadline = time.monotonic() + 60
    while True:  # the cluster replaces the worker
        try:
            assert isinstance(executor.submit(pid_and_sleep, 0).result(timeout=60), int)
            break
        except WorkerLost:
            if time.monotonic() > deadline:
                raise


@pytest.mark.parametrize("name", ["ray", "dask"])
def test_unreachable_address_fails_fast_with_one_line(name):
    pytest.importorskip({"ray": "ray", "dask": "distributed"}[name], reason="not installed")
    start = time.monotonic()
    with pytest.raises(UserError) as info:
        make_executor(name, address="127.0.0.1:1")
    assert time.monotonic() - start < 30
    message = str(info.value)
    assert "\n" not in message and "127.0.0.1:1" in message and "no " + name in message


def test_ray_address_of_another_cluster_is_refused_while_connected(ray_cluster, dask_cluster):
    with pytest.raises(UserError, match="already connected"):
        RayExecutor(dask_cluster)  # something answers there, but not this process's cluster
    with RayExecutor(ray_cluster) as pool:  # the same cluster's address is fine
        assert pool.submit(pow, 2, 5).result(timeout=60) == 32


def test_dask_local_cluster_started_and_stopped():
    pytest.importorskip("distributed", reason="dask[distributed] is not installed")
    with DaskExecutor(max_workers=1) as pool:
        assert pool.max_workers == 1
        address = pool.address
        assert pool.submit(pow, 3, 3).result(timeout=60) == 27
    with pytest.raises(UserError, match="no dask cluster answers"):
        DaskExecutor(address)
