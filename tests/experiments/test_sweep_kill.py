"""Reliability with real processes: SIGKILL of the driver or a worker, concurrent sweeps.

Every run's task appends ``start IDENT PID`` / ``end IDENT PID`` to a log file, so the tests
see every execution, including those the store rejected.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sgdtemp.storage import FINISHED, Store

pytestmark = pytest.mark.slow

DRIVER = textwrap.dedent(
    """
    import json, sys
    from sgdtemp.executors._toy import ToyTask
    from sgdtemp.experiments.sweep import Job, execute
    from sgdtemp.storage import NewRun, run_key

    def main():
        db, log, sweep, first, last, sleep = sys.argv[1:7]
        jobs = []
        for i in range(int(first), int(last)):
            config = {"toy": i}
            task = ToyTask(str(i), seed=i, sleep=float(sleep), log=log)
            jobs.append(Job(NewRun(run_key(config), config, seed=i), task))
        summary = execute(jobs, store=db, sweep=sweep, workers=2, max_attempts=20, poll_s=0.1)
        print(json.dumps(summary.counts()))

    if __name__ == "__main__":
        main()
    """
)


def start_driver(tmp_path: Path, sweep: str, first: int, last: int, sleep: float):
    script = tmp_path / "driver.py"
    if not script.exists():
        script.write_text(DRIVER)
    args = [str(tmp_path / "runs.db"), str(tmp_path / "log"), sweep, str(first), str(last)]
    return subprocess.Popen(
        [sys.executable, str(script), *args, str(sleep)], stdout=subprocess.PIPE, text=True
    )


def read_log(tmp_path: Path) -> list[tuple[str, str, int]]:
    log = tmp_path / "log"
    if not log.exists():
        return []
    return [
        (kind, ident, int(pid))
        for kind, ident, pid in (line.split() for line in log.read_text().splitlines())
    ]


def finished_idents(db: Path) -> set[str]:
    with Store(db) as store:
        return {str(r.seed) for r in store.runs() if r.status in FINISHED}


def check_store(db: Path, idents: range) -> None:
    with Store(db) as store:
        assert store.integrity_check() == "ok"
        records = store.runs()
        assert sorted(r.seed for r in records) == list(idents)  # one record per run
        assert all(r.status == "ok" for r in records)
        for record in records:
            accepted = [a for a in store.attempts(record.key) if a.outcome == "ok"]
            assert len(accepted) == 1  # recorded exactly once
            assert record.metrics["loss"] > 0


def wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("timed out")
        time.sleep(0.05)


def test_driver_sigkill_at_random_moments_then_resume(tmp_path):
    rng = random.Random(1)
    n = 12
    db = tmp_path / "runs.db"
    snapshots: list[tuple[int, set[str]]] = []
    for _ in range(3):
        driver = start_driver(tmp_path, "s", 0, n, sleep=0.25)
        # Kill it at a random moment after its first run started.
        before = len(read_log(tmp_path))
        wait_for(lambda before=before: len(read_log(tmp_path)) > before)
        time.sleep(rng.uniform(0.0, 0.8))
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        driver.stdout.close()
        time.sleep(1.0)  # its orphaned workers notice and exit
        snapshots.append((len(read_log(tmp_path)), finished_idents(db)))
    driver = start_driver(tmp_path, "s", 0, n, sleep=0.25)
    out, _ = driver.communicate(timeout=300)
    assert driver.returncode == 0
    summary = json.loads(out)
    assert summary["total"] == n and summary["ok"] + summary["skipped"] == n
    assert summary["skipped"] == len(snapshots[-1][1])
    check_store(db, range(n))
    log = read_log(tmp_path)
    for position, finished in snapshots:  # no run finished by then started again afterwards
        assert not [
            ident for kind, ident, _ in log[position:] if kind == "start" and ident in finished
        ]
    assert snapshots[-1][1], "no run finished before the last kill: the test proves little"


def test_worker_sigkill_at_random_moments(tmp_path):
    rng = random.Random(2)
    n = 10
    driver = start_driver(tmp_path, "s", 0, n, sleep=0.3)
    killed: set[str] = set()
    try:
        for _ in range(3):

            def running():
                entries = read_log(tmp_path)
                ended = {(i, p) for k, i, p in entries if k == "end"}
                return [(i, p) for k, i, p in entries if k == "start" and (i, p) not in ended]

            wait_for(lambda: [e for e in running() if e[0] not in killed])
            time.sleep(rng.uniform(0.0, 0.2))
            candidates = [e for e in running() if e[0] not in killed]
            if not candidates:
                continue
            ident, pid = rng.choice(candidates)
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(ident)
            except ProcessLookupError:
                pass
        out, _ = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    assert driver.returncode == 0
    assert json.loads(out)["ok"] == n
    assert killed
    check_store(tmp_path / "runs.db", range(n))
    log = read_log(tmp_path)
    ends = [ident for kind, ident, _ in log if kind == "end"]
    assert sorted(ends, key=int) == [str(i) for i in range(n)]  # each run completed once
    with Store(tmp_path / "runs.db") as store:
        for record in store.runs():
            if str(record.seed) in killed:
                assert record.attempts >= 2
                assert "lost" in [a.outcome for a in store.attempts(record.key)]


def test_two_sweeps_write_one_store_concurrently(tmp_path):
    a = start_driver(tmp_path, "A", 0, 10, sleep=0.1)
    b = start_driver(tmp_path, "B", 5, 15, sleep=0.1)
    out_a, _ = a.communicate(timeout=300)
    out_b, _ = b.communicate(timeout=300)
    assert a.returncode == b.returncode == 0
    for out in (out_a, out_b):
        summary = json.loads(out)
        assert summary["total"] == 10 and summary["ok"] + summary["skipped"] == 10
    check_store(tmp_path / "runs.db", range(15))
    starts = sorted((ident for kind, ident, _ in read_log(tmp_path) if kind == "start"), key=int)
    assert starts == [str(i) for i in range(15)]  # the shared runs 5..9 ran once
    with Store(tmp_path / "runs.db") as store:
        assert [r.seed for r in store.runs(sweep="A")] == list(range(10))
        assert [r.seed for r in store.runs(sweep="B")] == list(range(5, 15))
