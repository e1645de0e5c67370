"""The local process pool: results, errors, a dead worker fails only its task, no orphans."""

from __future__ import annotations

import concurrent.futures as cf
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from sgdtemp.errors import UserError
from sgdtemp.executors import (
    EXECUTORS,
    LocalExecutor,
    RemoteTraceback,
    WorkerLost,
    check_reachable,
    limit_threads,
    make_executor,
)
from sgdtemp.executors._base import import_optional
from sgdtemp.executors._toy import TorchToyTask, kill_self, pid_and_sleep


def _raise(message):
    raise KeyError(message)


@pytest.fixture(scope="module")
def pool():
    with LocalExecutor(2) as executor:
        yield executor


def test_results_and_parallel_workers(pool):
    futures = [pool.submit(pid_and_sleep, 0.3) for _ in range(4)]
    pids = {f.result(timeout=60) for f in futures}
    assert len(pids) == 2 and os.getpid() not in pids
    assert pool.max_workers == 2


def test_exception_keeps_type_and_remote_traceback(pool):
    future = pool.submit(_raise, "boom")
    with pytest.raises(KeyError, match="boom") as info:
        future.result(timeout=60)
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "_raise" in str(info.value.__cause__)


def test_dead_worker_fails_only_its_task(pool):
    slow = pool.submit(pid_and_sleep, 1.0)
    time.sleep(0.2)  # let the slow task start first
    dying = pool.submit(kill_self)
    with pytest.raises(WorkerLost, match="SIGKILL"):
        dying.result(timeout=60)
    assert isinstance(slow.result(timeout=60), int)  # the other worker's task survives
    assert pool.submit(pow, 3, 4).result(timeout=60) == 81  # and a replacement worker runs


def test_unpicklable_task_fails_its_future(pool):
    with pytest.raises(Exception, match="pickle|local object"):
        pool.submit(lambda: 1).result(timeout=60)
    assert pool.submit(pow, 2, 2).result(timeout=60) == 4


def test_workers_run_one_thread(pool):
    result = pool.submit(TorchToyTask(steps=1, n=64, width=8)).result(timeout=120)
    assert result["threads"] == 1


def test_workers_get_one_thread_env(pool):
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        assert pool.submit(os.getenv, var).result(timeout=60) == "1"


def test_worker_start_up_imports_no_numerical_library():
    """A spawned worker imports sgdtemp before it limits its threads: that must not load torch."""
    code = textwrap.dedent(
        """
        import sys
        import sgdtemp, sgdtemp.executors._local, sgdtemp.experiments.sweep
        print(sorted(m for m in ("torch", "numpy", "scipy") if m in sys.modules))
        from sgdtemp.theory import lr_for_temperature, stationary_density_1d, temperature
        import sgdtemp.theory as theory
        assert callable(temperature) and theory.temperature is temperature
        assert all(getattr(theory, name) is not None for name in theory.__all__)
        assert set(theory.__all__) <= set(dir(theory))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert out.stdout.strip() == "[]"


def test_default_size_is_the_usable_cpus():
    from sgdtemp.executors import usable_cpus

    assert usable_cpus() == len(os.sched_getaffinity(0))
    with LocalExecutor() as pool:  # starts no worker before a submission
        assert pool.max_workers == usable_cpus()


def test_shutdown_cancels_queued_futures():
    executor = LocalExecutor(1)
    running = executor.submit(pid_and_sleep, 0.5)
    queued = [executor.submit(pid_and_sleep, 0.0) for _ in range(3)]
    time.sleep(0.1)
    executor.shutdown(wait=True, cancel_futures=True)
    assert isinstance(running.result(), int)
    assert all(f.cancelled() for f in queued)
    with pytest.raises(RuntimeError, match="shutdown"):
        executor.submit(pow, 1, 1)


def test_workers_exit_when_the_driver_is_killed(tmp_path):
    pidfile = tmp_path / "worker.pid"
    driver = textwrap.dedent(
        f"""
        import os, time
        from sgdtemp.executors import LocalExecutor
        def main():
            pool = LocalExecutor(1)
            pool.submit(os.system, "echo $PPID > {pidfile}.tmp && mv {pidfile}.tmp {pidfile}")
            pool.submit(time.sleep, 60)
            time.sleep(60)
        if __name__ == "__main__":
            main()
        """
    )
    script = tmp_path / "driver.py"
    script.write_text(driver)
    proc = subprocess.Popen([sys.executable, str(script)])
    try:
        deadline = time.monotonic() + 60
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        worker = int(pidfile.read_text())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(worker, signal.SIGKILL)
            pytest.fail("the worker outlived its driver by 10 s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_limit_threads_sets_torch_and_env():
    import torch

    before = torch.get_num_threads()
    saved = {
        k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    }
    try:
        limit_threads(1)
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_make_executor_errors():
    assert set(EXECUTORS) == {"local", "ray", "dask"}
    with pytest.raises(UserError, match="unknown; choose one of local, ray, dask"):
        make_executor("slurm")
    with pytest.raises(UserError, match="--workers must be at least 1"):
        make_executor("local", workers=0)
    with pytest.raises(UserError, match="--address applies to"):
        make_executor("local", address="127.0.0.1:1")


def test_missing_optional_package_says_how_to_install():
    with pytest.raises(UserError, match=r"pip install 'nopkg\[x\]'"):
        import_optional("sgdtemp_no_such_module", executor="ray", install="nopkg[x]")


@pytest.mark.parametrize("address", ["127.0.0.1:1", "tcp://127.0.0.1:1", "ray://127.0.0.1:1"])
def test_unreachable_address_is_one_line(address):
    with pytest.raises(UserError) as info:
        check_reachable(address, executor="ray", hint="start one")
    assert "\n" not in str(info.value) and address in str(info.value)


@pytest.mark.parametrize("address", ["nohostport", "127.0.0.1", "127.0.0.1:notaport"])
def test_malformed_address(address):
    with pytest.raises(UserError, match="expected HOST:PORT"):
        check_reachable(address, executor="dask", hint="")


def test_future_interface_is_concurrent_futures(pool):
    futures = [pool.submit(pow, 2, k) for k in range(5)]
    done, _ = cf.wait(futures, timeout=60)
    assert sorted(f.result() for f in done) == [1, 2, 4, 8, 16]
    assert list(pool.map(pow, [2, 3], [3, 2])) == [8, 9]


def test_an_error_in_the_with_block_stops_running_tasks_at_once():
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        with LocalExecutor(1) as executor:
            running = executor.submit(pid_and_sleep, 60)
            queued = executor.submit(pid_and_sleep, 0)
            time.sleep(0.5)
            raise KeyboardInterrupt
    assert time.monotonic() - start < 30  # not the task's 60 s
    assert queued.cancelled()
    with pytest.raises((WorkerLost, cf.CancelledError)):
        running.result(timeout=10)
