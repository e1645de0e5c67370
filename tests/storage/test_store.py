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


# ------------------------------------------------------------------ safe opening (_schema.py)


def digest_of(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_readonly_store_reads_without_writing_and_leaves_no_wal_files(store, tmp_path):
    runs = [new_run(i) for i in range(3)]
    store.register("s", runs)
    claim = store.claim(runs[0].key, max_attempts=3)
    store.finish(runs[0].key, claim.token, status="ok", metrics={"loss": 0.5})
    store.close()
    before = digest_of(store.path)
    names = sorted(p.name for p in tmp_path.iterdir())
    with Store(store.path, readonly=True) as reader:
        assert [r.status for r in reader.runs()] == ["ok", "pending", "pending"]
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            reader.register("t", [new_run(9)])
    assert digest_of(store.path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # no -wal / -shm left


def test_readonly_store_beside_a_live_writer_sees_its_records(store):
    run = new_run(0)
    store.register("s", [run])  # the writer stays open
    with Store(store.path, readonly=True) as reader:
        assert reader.run(run.key).status == "pending"
    claim = store.claim(run.key, max_attempts=3)  # the writer's files are intact
    assert store.finish(run.key, claim.token, status="ok")


def make_foreign(path):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.execute("INSERT INTO notes VALUES ('mine')")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("readonly", [False, True])
def test_a_foreign_database_is_refused_untouched(tmp_path, readonly):
    path = tmp_path / "theirs.db"
    make_foreign(path)
    before = digest_of(path)
    with pytest.raises(UserError, match=r"another program \(tables: notes\)"):
        Store(path, readonly=readonly)
    assert digest_of(path) == before
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # no WAL switch
    conn.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theirs.db"]


def test_an_empty_file_is_a_store_only_for_a_writer(tmp_path):
    path = tmp_path / "empty.db"
    path.write_bytes(b"")
    with pytest.raises(UserError, match="is empty, not an sgdtemp store"):
        Store(path, readonly=True)
    assert path.read_bytes() == b""
    with Store(path) as store:  # a sweep may start its store in an empty file
        assert store.counts()["pending"] == 0


def test_a_version_1_store_is_read_and_upgraded_with_checksums(tmp_path):
    path = tmp_path / "v1.db"
    with Store(path) as store:
        run = new_run(0)
        store.register("s", [run])
        claim = store.claim(run.key, max_attempts=3)
        store.finish(run.key, claim.token, status="ok", metrics={"loss": 0.5})
    conn = sqlite3.connect(path)  # as version 1 left it: no digest column
    conn.execute("ALTER TABLE runs DROP COLUMN digest")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    before = digest_of(path)
    with Store(path, readonly=True) as reader:
        assert reader.run(run.key).metrics == {"loss": 0.5}
        assert [r.metrics for r in reader.runs(sweep="s")] == [{"loss": 0.5}]  # joined query
    assert digest_of(path) == before
    with Store(path) as writer:  # upgraded: the finished run is sealed
        assert writer._conn.execute("PRAGMA user_version").fetchone()[0] == 2
        assert writer.run(run.key).metrics == {"loss": 0.5}
    conn = sqlite3.connect(path)
    conn.execute("UPDATE runs SET metrics = '{\"loss\": 0.25}'")
    conn.commit()
    conn.close()
    with pytest.raises(UserError, match="do not match their checksum"):
        Store(path, readonly=True).runs()


def test_finished_runs_are_sealed_on_every_path(store):
    runs = [new_run(i) for i in range(4)]
    store.register("s", runs[:3] + [new_run(3, status="unstable", metrics={"x": 1})])
    claim = store.claim(runs[0].key, max_attempts=3)
    store.finish(runs[0].key, claim.token, status="ok", metrics={"loss": 1.0})
    claim = store.claim(runs[1].key, max_attempts=1)
    store.retry_lost(runs[1].key, claim.token, "killed", max_attempts=1)  # failed
    rows = dict(store._conn.execute("SELECT key, digest FROM runs"))
    assert rows[runs[2].key] is None  # pending: nothing to seal
    assert all(rows[r.key] for r in (runs[0], runs[1], new_run(3)))
    assert [r.status for r in store.runs()] == ["ok", "failed", "pending", "unstable"]
    store._conn.execute("UPDATE runs SET lr = 0.2 WHERE key = ?", (runs[1].key,))
    with pytest.raises(UserError, match=f"run {runs[1].key[:16]} is damaged"):
        store.runs()
