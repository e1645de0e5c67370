"""Random SIGKILLs of sweep drivers and workers across resumes; a plain rerun finishes the sweep.

The toy series runs the real engine (``execute``) in driver processes that are killed at random
moments, between which random workers are killed too (each run's worker at most
``max_attempts - 1`` times, so no run may rightly fail); then one plain rerun (no
``--retry-failed``, the default ``max_attempts``) must finish every run: every run ``ok``,
recorded exactly once (one accepted attempt, metrics equal to the task run here), no finished run
started again, the store sound. Every task appends ``start IDENT PID`` / ``end IDENT PID`` to a
log, so the test sees every execution, the abandoned ones included.

The CLI series kills the worker of a real digits training run under ``--max-attempts 1``: the run
is recorded failed, a plain rerun exits 1 saying how many runs are left failed and how to retry
them, and ``--retry-failed`` finishes the sweep.
"""

from __future__ import annotations

import collections
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sgdtemp.executors._toy import ToyTask
from sgdtemp.storage import Store

pytestmark = pytest.mark.slow

MAX_ATTEMPTS = 3  # the engine's and the CLI's default
KILLS = 24

DRIVER = textwrap.dedent(
    """
    import json, sys
    from sgdtemp.executors._toy import ToyTask
    from sgdtemp.experiments.engine import Job, execute
    from sgdtemp.storage import NewRun, run_key

    def main():
        db, log, n, sleep = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
        jobs = []
        for i in range(n):
            config = {"toy": i}
            task = ToyTask(str(i), seed=i, sleep=sleep, log=log)
            jobs.append(Job(NewRun(run_key(config), config, seed=i), task))
        summary = execute(jobs, store=db, sweep="s", workers=2, poll_s=0.1)  # default attempts
        left = summary.failed + getattr(summary, "failed_earlier", 0)
        print(json.dumps({**summary.counts(), "left_failed": left}))

    if __name__ == "__main__":
        main()
    """
)


def parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def read_log(log: Path) -> list[tuple[str, str, int]]:
    if not log.exists():
        return []
    entries = []
    for line in log.read_text().splitlines():
        kind, ident, pid = line.split()
        entries.append((kind, ident, int(pid)))
    return entries


def running(log: Path, driver: int) -> list[tuple[str, int]]:
    """Tasks started and not ended by a live worker of ``driver``."""
    entries = read_log(log)
    ended = {(i, p) for k, i, p in entries if k == "end"}
    return [
        (i, p)
        for k, i, p in entries
        if k == "start" and (i, p) not in ended and parent_of(p) == driver
    ]


def finished(db: Path) -> set[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT seed FROM runs WHERE status IN ('ok','diverged','failed','unstable')"
        ).fetchall()
    except sqlite3.OperationalError:  # not created yet
        rows = []
    finally:
        conn.close()
    return {str(r[0]) for r in rows}


def wait_for(predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_random_driver_and_worker_kills_then_a_plain_rerun_finishes(tmp_path):
    rng = random.Random(15)
    n, sleep = 40, 1.2  # tasks outlive most kills: runs are caught in flight again and again
    db, log, script = tmp_path / "runs.db", tmp_path / "log", tmp_path / "driver.py"
    script.write_text(DRIVER)

    def start():
        return subprocess.Popen(
            [sys.executable, str(script), str(db), str(log), str(n), str(sleep)],
            stdout=subprocess.PIPE,
            text=True,
        )

    kills = collections.Counter()
    worker_kills: collections.Counter[str] = collections.Counter()
    snapshots: list[tuple[int, set[str]]] = []  # (log length, runs finished) after each kill
    driver = start()
    try:
        while sum(kills.values()) < KILLS:
            if not wait_for(lambda d=driver: running(log, d.pid) or d.poll() is not None):
                pytest.fail("no run started within a minute")
            if driver.poll() is not None:
                pytest.fail(f"the sweep finished after only {dict(kills)} kills; make it longer")
            time.sleep(rng.uniform(0.0, 1.6))
            candidates = [
                (i, p) for i, p in running(log, driver.pid) if worker_kills[i] < MAX_ATTEMPTS - 1
            ]
            if candidates and rng.random() < 0.35:
                ident, pid = rng.choice(candidates)
                if parent_of(pid) == driver.pid:  # still ours (no pid reuse)
                    os.kill(pid, signal.SIGKILL)
                    worker_kills[ident] += 1
                    kills["worker"] += 1
                    wait_for(lambda p=pid: not alive(p), 10)
                continue
            workers = {p for _, _, p in read_log(log) if parent_of(p) == driver.pid}
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait()
            driver.stdout.close()
            kills["driver"] += 1
            wait_for(lambda w=workers: not any(alive(p) for p in w), 10)  # orphans exit
            snapshots.append((len(read_log(log)), finished(db)))
            driver = start()
        out, _ = driver.communicate(timeout=300)  # the plain rerun: let it finish
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    assert kills["driver"] >= 10 and kills["worker"] >= 5, kills
    assert driver.returncode == 0
    summary = json.loads(out)
    assert summary["ok"] + summary["skipped"] == n and summary["left_failed"] == 0, summary
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    statuses = collections.Counter(s for (s,) in conn.execute("SELECT status FROM runs"))
    conn.close()
    assert statuses == {"ok": n}, statuses  # every run finished by the plain rerun
    with Store(db, readonly=True) as store:
        assert store.integrity_check() == "ok"
        records = store.runs()
        assert sorted(r.seed for r in records) == list(range(n))  # no run lost, none twice
        for record in records:
            assert record.status == "ok", (record.seed, record.error)
            outcomes = [a.outcome for a in store.attempts(record.key)]
            assert outcomes.count("ok") == 1  # recorded exactly once
            assert record.metrics == ToyTask(str(record.seed), seed=record.seed)()
            assert record.attempts == 1 + outcomes.count("lost")
    entries = read_log(log)
    for position, done in snapshots:  # a run finished by a kill never started again
        again = {i for k, i, _ in entries[position:] if k == "start" and i in done}
        assert not again, again
    assert snapshots[-1][1], "no run had finished by the last kill: the test proves little"
    print(f"kills survived: {dict(kills)}; runs {n}, lost 0, duplicated 0")


SPEC = textwrap.dedent(
    """\
    name = "digits-kill"
    dataset = "digits"
    model = "mlp"
    epochs = 40
    eval = ["test"]

    [model_args]
    width = 32

    [grid]
    lrs = [0.05]
    batch_sizes = [8]
    """
)


def sweep(tmp_path: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "sgdtemp.cli", "sweep", str(tmp_path / "spec.toml")]
    cmd += ["--db", str(tmp_path / "runs.db"), "--workers", "1", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_cli_plain_rerun_names_the_failed_runs_and_retry_failed_finishes(tmp_path):
    (tmp_path / "spec.toml").write_text(SPEC)
    db = tmp_path / "runs.db"
    driver = sweep(tmp_path, "--max-attempts", "1")
    try:

        def started() -> bool:
            if not db.exists():
                return False
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                return bool(
                    conn.execute(
                        "SELECT COUNT(*) FROM runs WHERE status = 'running' "
                        "AND started_at IS NOT NULL"
                    ).fetchone()[0]
                )
            except sqlite3.OperationalError:
                return False
            finally:
                conn.close()

        assert wait_for(started, 120), "the training run never started"
        workers = [
            int(p) for p in os.listdir("/proc") if p.isdigit() and parent_of(int(p)) == driver.pid
        ]
        for pid in workers:  # the one worker (its pool has no other child)
            os.kill(pid, signal.SIGKILL)
        out, err = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    assert workers and driver.returncode == 1, err
    first = err
    plain = sweep(tmp_path)
    out, err = plain.communicate(timeout=300)
    assert plain.returncode == 1  # a plain rerun does not pass over the failed run in silence
    assert "1 of 1 runs are recorded failed" in first and "--retry-failed" in first
    assert "1 of 1 runs are recorded failed (1 by an earlier run)" in err
    assert "--retry-failed" in err and len(err.strip().splitlines()) == 1
    again = sweep(tmp_path, "--retry-failed", "--json")
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert json.loads(out)["ok"] == 1
    with Store(db, readonly=True) as store:
        [record] = store.runs()
        assert record.status == "ok" and record.attempts == 1
