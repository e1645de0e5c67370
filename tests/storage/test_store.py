"""The SQLite store: schema, leases, token-guarded writes, concurrent writers."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from sgdtemp.errors import UserError
from sgdtemp.storage import NewRun, Store, environment, process_owner, run_key

RUN_COLUMNS = {
    "key": "TEXT",
    "sweep": "TEXT",
    "status": "TEXT",
    "dataset": "TEXT",
    "model": "TEXT",
    "lr": "REAL",
    "batch_size": "INTEGER",
    "momentum": "REAL",
    "temperature": "REAL",
    "seed": "INTEGER",
    "metrics": "TEXT",
    "error": "TEXT",
    "started_at": "TEXT",
    "finished_at": "TEXT",
    "host": "TEXT",
    "environment": "TEXT",
}


def new_run(i: int, **columns) -> NewRun:
    config = {"i": i}
    return NewRun(run_key(config), config, lr=0.1, batch_size=8, seed=i, **columns)


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "runs.db") as s:
        yield s


def test_schema_and_pragmas(store):
    # Read the file with plain sqlite3, not through the store.
    conn = sqlite3.connect(store.path)
    columns = {row[1]: row[2] for row in conn.execute("PRAGMA table_info(runs)")}
    assert {k: columns[k] for k in RUN_COLUMNS} == RUN_COLUMNS
    primary = [row[1] for row in conn.execute("PRAGMA table_info(runs)") if row[5]]
    assert primary == ["key"]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    foreign = {row[2] for row in conn.execute("PRAGMA foreign_key_list(sweep_runs)")}
    assert foreign == {"sweeps", "runs"}
    conn.close()
    assert store._conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    with pytest.raises(sqlite3.IntegrityError):  # foreign keys are enforced
        store._conn.execute(
            "INSERT INTO sweep_runs (sweep, key, position) VALUES ('nope', 'nope', 0)"
        )
    with pytest.raises(sqlite3.IntegrityError):  # so is the status vocabulary
        store._conn.execute(
            "INSERT INTO runs (key, sweep, status, config, created_at) "
            "VALUES ('k', 's', 'done', '{}', 'now')"
        )


def test_lifecycle_and_token_guard(store):
    run = new_run(0, dataset="d", model="m", momentum=0.0, temperature=0.0125)
    store.register("s", [run], spec={"grid": [1]})
    assert store.run(run.key).status == "pending"
    claim = store.claim(run.key, max_attempts=3)
    assert claim is not None and claim.attempt == 1
    assert store.claim(run.key, max_attempts=3) is None  # held by a live owner (us)
    assert not store.start(run.key, "wrong-token", pid=1, host="h", environment={})
    assert store.start(run.key, claim.token, pid=1, host="h", environment=environment())
    assert not store.finish(run.key, "wrong-token", status="ok", metrics={"loss": 9.0})
    assert store.finish(run.key, claim.token, status="ok", metrics={"loss": 0.5})
    assert not store.finish(run.key, claim.token, status="failed")  # finished: no rewrite
    record = store.run(run.key)
    assert (record.status, record.metrics, record.attempts) == ("ok", {"loss": 0.5}, 1)
    assert (record.dataset, record.model, record.temperature) == ("d", "m", 0.0125)
    assert record.config == {"i": 0} and record.host == "h"
    assert record.environment["packages"]["sgdtemp"]
    assert store.claim(run.key, max_attempts=3) is None
    [attempt] = store.attempts(run.key)
    assert (attempt.outcome, attempt.owner) == ("ok", process_owner())
    with pytest.raises(ValueError, match="finished status"):
        store.finish(run.key, claim.token, status="running")


def test_register_is_idempotent_and_keeps_sweep_membership(store):
    runs = [new_run(i) for i in range(3)]
    store.register("A", runs)
    store.register("A", runs)
    store.register("B", runs[1:] + [new_run(3)])
    assert [r.seed for r in store.runs(sweep="A")] == [0, 1, 2]
    assert [r.seed for r in store.runs(sweep="B")] == [1, 2, 3]
    assert [r.sweep for r in store.runs()] == ["A", "A", "A", "B"]  # the first registration
    assert store.counts(sweep="B")["pending"] == 3 and store.counts()["pending"] == 4
    assert store.sweeps() == ["A", "B"]


def test_unstable_runs_are_recorded_finished(store):
    run = new_run(0, status="unstable", metrics={"lr_sharpness": 2.5})
    store.register("s", [run])
    record = store.run(run.key)
    assert record.status == "unstable" and record.finished_at is not None
    assert store.claim(run.key, max_attempts=3) is None
    with pytest.raises(ValueError, match="pending or unstable"):
        store.register("s", [new_run(1, status="ok")])


def test_retry_lost_is_bounded(store):
    run = new_run(0)
    store.register("s", [run])
    claim = store.claim(run.key, max_attempts=2)
    again = store.retry_lost(run.key, claim.token, "worker 1 killed by SIGKILL", max_attempts=2)
    assert again is not None and again.attempt == 2
    assert store.retry_lost(run.key, claim.token, "stale token", max_attempts=2) is None
    assert store.retry_lost(run.key, again.token, "worker 2 killed", max_attempts=2) is None
    record = store.run(run.key)
    assert record.status == "failed" and "worker died in 2 attempts; last: worker 2" in record.error
    assert [a.outcome for a in store.attempts(run.key)] == ["lost", "lost"]
    assert store.requeue([run.key]) == 1
    assert store.run(run.key).status == "pending" and store.run(run.key).attempts == 0


def test_release_hands_claims_back(store):
    run = new_run(0)
    store.register("s", [run])
    claim = store.claim(run.key, max_attempts=3)
    store.release([claim.token])
    record = store.run(run.key)
    assert (record.status, record.attempts) == ("pending", 0)
    assert not store.finish(run.key, claim.token, status="ok")


CLAIM_AND_EXIT = textwrap.dedent(
    """
    import sys, time
    from sgdtemp.storage import Store
    store = Store(sys.argv[1])
    for key in sys.argv[3:]:
        if not key.startswith("--"):
            claim = store.claim(key, max_attempts=int(sys.argv[2]))
            assert claim is not None
            if "--start" in sys.argv:
                assert store.start(key, claim.token, pid=0, host="h", environment={})
    print("claimed", flush=True)
    if "--hold" in sys.argv:
        time.sleep(30)
    """
)


def claim_in_subprocess(db, keys, max_attempts=3):
    subprocess.run(
        [sys.executable, "-c", CLAIM_AND_EXIT, str(db), str(max_attempts), *keys], check=True
    )


@pytest.mark.parametrize("started", [False, True])
def test_a_dead_drivers_claims_are_reclaimed_without_costing_an_attempt(store, started):
    runs = [new_run(0), new_run(1)]
    store.register("s", runs)
    # a real driver process claims (and starts) the runs, then dies
    claim_in_subprocess(store.path, [r.key for r in runs] + (["--start"] if started else []))
    for run in runs:
        claim = store.claim(run.key, max_attempts=1)  # even with a bound of one try
        assert claim is not None and claim.attempt == 2
        record = store.run(run.key)
        assert (record.status, record.attempts) == ("running", 0)
    abandoned, current = store.attempts(runs[0].key)
    assert abandoned.outcome == "abandoned" and current.outcome is None
    when = "after" if started else "before"
    assert f"stopped {when} the run started" in abandoned.error
    assert store.start(runs[0].key, current.token, pid=0, host="h", environment={})
    assert store.finish(runs[0].key, current.token, status="ok")
    assert store.run(runs[0].key).attempts == 1  # the try that ran and ended counts


def test_a_lowered_bound_fails_a_run_whose_workers_died(store):
    run = new_run(0)
    store.register("s", [run])
    claim = store.claim(run.key, max_attempts=3)
    again = store.retry_lost(run.key, claim.token, "worker killed", max_attempts=3)
    store.release([again.token])
    assert (store.run(run.key).status, store.run(run.key).attempts) == ("pending", 1)
    assert store.claim(run.key, max_attempts=1) is None
    record = store.run(run.key)
    assert record.status == "failed" and "worker died in 1 attempts" in record.error


def test_live_owner_keeps_its_claim_until_the_lease_expires(store):
    run = new_run(0)
    store.register("s", [run])
    holder = subprocess.Popen(
        [sys.executable, "-c", CLAIM_AND_EXIT, str(store.path), "3", run.key, "--hold"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "claimed"
        assert store.claim(run.key, max_attempts=3, lease_s=60) is None
        time.sleep(0.05)
        claim = store.claim(run.key, max_attempts=3, lease_s=0.01)  # heartbeat too old
        assert claim is not None and claim.attempt == 2
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


CONCURRENT_WRITER = textwrap.dedent(
    """
    import sys
    from sgdtemp.storage import NewRun, Store, run_key
    store = Store(sys.argv[1])
    for key in sys.argv[2:]:
        claim = store.claim(key, max_attempts=3)
        if claim is None:
            continue
        store.start(key, claim.token, pid=0, host="h", environment={"w": sys.argv[2]})
        assert store.finish(key, claim.token, status="ok", metrics={"key": key})
    """
)


def test_concurrent_writers_lose_and_duplicate_nothing(store):
    runs = [new_run(i) for i in range(60)]
    store.register("s", runs)
    keys = [r.key for r in runs]
    # Four processes race over overlapping halves of the runs.
    procs = [
        subprocess.Popen([sys.executable, "-c", CONCURRENT_WRITER, str(store.path), *part])
        for part in (keys[:40], keys[20:], keys[::-1][:40], keys[10:50])
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    records = store.runs(sweep="s")
    assert [r.status for r in records] == ["ok"] * 60
    assert all(r.metrics == {"key": r.key} for r in records)
    for key in keys:
        assert [a.outcome for a in store.attempts(key)] == ["ok"]  # claimed once, by one writer
    assert store.integrity_check() == "ok"


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="no such store"):
        Store(tmp_path / "missing.db", create=False)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(UserError, match="is not an sgdtemp store"):
        Store(junk)
    newer = tmp_path / "newer.db"
    conn = sqlite3.connect(newer)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(UserError, match="newer than this sgdtemp"):
        Store(newer)


def test_artifacts_folder(store):
    folder = store.artifact_dir("abc")
    assert folder.is_dir() and folder.parent == store.path.parent / "runs.artifacts"
