"""One real Ray cluster and one real Dask cluster on loopback, shared by every test here.

Ray's start and stop cost seconds, so each cluster is started once per session, lazily, by the
first test that asks for it. Tests skip with a reason when the package is not installed.
"""

from __future__ import annotations

import importlib.util

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    """This pytest process's Ray connection to a 2-CPU local cluster; yields its GCS address."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (pip install ray)")
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        _node_ip_address="127.0.0.1",
    )
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def dask_cluster():
    """A Dask LocalCluster (2 single-threaded worker processes); yields the scheduler address."""
    if importlib.util.find_spec("distributed") is None:
        pytest.skip("dask[distributed] is not installed (pip install 'dask[distributed]')")
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0"
        )
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()
