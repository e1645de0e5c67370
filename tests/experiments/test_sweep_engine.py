"""The sweep engine with small deterministic tasks: records, skips, failures, retries, resume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sgdtemp.errors import UserError
from sgdtemp.executors import LocalExecutor
from sgdtemp.executors._toy import ToyTask
from sgdtemp.experiments.engine import Job, Outcome, SweepProgress, execute
from sgdtemp.experiments.sources import describe
from sgdtemp.experiments.spec import RunConfig, Stability, iso_temperature_grid
from sgdtemp.experiments.sweep import run
from sgdtemp.storage import NewRun, Store, run_key


@pytest.fixture(scope="module")
def pool():
    with LocalExecutor(2) as executor:
        yield executor


def toy_jobs(idents, log=None, **options):
    jobs = []
    for ident in idents:
        config = {"toy": ident, **{k: v for k, v in options.items() if k != "sleep"}}
        task = ToyTask(str(ident), seed=ident, log=None if log is None else str(log), **options)
        jobs.append(Job(NewRun(run_key(config), config, seed=ident), task))
    return jobs


def log_lines(log: Path, kind: str) -> list[str]:
    if not log.exists():
        return []
    return [line.split()[1] for line in log.read_text().splitlines() if line.startswith(kind)]


def test_records_every_run_and_rerun_skips_finished(tmp_path, pool):
    db, log = tmp_path / "runs.db", tmp_path / "log"
    jobs = toy_jobs(range(6), log=log)
    events: list[SweepProgress] = []
    summary = execute(jobs, store=db, sweep="toy", executor=pool, progress=events.append)
    assert summary.counts() == {
        "total": 6,
        "ok": 6,
        "diverged": 0,
        "failed": 0,
        "unstable": 0,
        "skipped": 0,
        "failed_earlier": 0,
    }
    assert events[-1].done == 6 and events[-1].running == 0
    assert all(e.running <= pool.max_workers for e in events)
    with Store(db) as store:
        records = store.runs(sweep="toy")
        assert [r.seed for r in records] == list(range(6))
        for record, job in zip(records, jobs):
            # Oracle: the same task called here, in this process.
            assert record.metrics == job.task()
            assert record.status == "ok" and record.attempts == 1
            assert record.environment["host"] == record.host
            assert record.started_at <= record.finished_at
        assert store.integrity_check() == "ok"
    starts = len(log_lines(log, "start"))
    again = execute(jobs, store=db, sweep="toy", executor=pool)
    assert again.skipped == 6 and again.ok == 0
    assert len(log_lines(log, "start")) == starts  # nothing ran again


def test_failing_task_is_recorded_failed_once_with_the_traceback(tmp_path, pool):
    db = tmp_path / "runs.db"
    jobs = toy_jobs([1], fail=True) + toy_jobs([2])
    summary = execute(jobs, store=db, sweep="s", executor=pool)
    assert (summary.failed, summary.ok) == (1, 1)
    with Store(db) as store:
        failed = store.runs(status="failed")[0]
        assert failed.error.startswith("ValueError: task 1 fails on purpose")
        assert "Traceback" in failed.error and failed.attempts == 1
    plain = execute(jobs, store=db, sweep="s", executor=pool)  # a plain rerun says what is left
    assert (plain.failed, plain.skipped, plain.failed_earlier, plain.left_failed) == (0, 2, 1, 1)
    summary = execute(jobs, store=db, sweep="s", executor=pool, retry_failed=True)
    assert (summary.failed, summary.skipped) == (1, 1)  # requeued, ran, failed again
    assert (summary.failed_earlier, summary.left_failed) == (0, 1)


def test_diverged_status_comes_from_the_task(tmp_path, pool):
    summary = execute(toy_jobs([0], lr=5.0), store=tmp_path / "r.db", sweep="s", executor=pool)
    assert summary.diverged == 1


def test_dead_worker_is_retried_then_failed_with_the_reason(tmp_path, pool):
    db, log = tmp_path / "runs.db", tmp_path / "log"
    once = toy_jobs([1], log=log, die_first=1)
    always = toy_jobs([2], log=log, die_first=99)
    summary = execute(once + always, store=db, sweep="s", executor=pool, max_attempts=2)
    assert (summary.ok, summary.failed) == (1, 1)
    with Store(db) as store:
        ok = store.run(once[0].run.key)
        assert ok.status == "ok" and ok.attempts == 2
        assert ok.metrics == ToyTask("1", seed=1)()
        lost = store.run(always[0].run.key)
        assert lost.status == "failed" and lost.attempts == 2
        assert "worker died in 2 attempts" in lost.error and "SIGKILL" in lost.error
        outcomes = [a.outcome for a in store.attempts(always[0].run.key)]
        assert outcomes == ["lost", "lost"]


def test_driver_writes_mode_stores_the_same_metrics(tmp_path, pool):
    jobs = toy_jobs(range(3))
    execute(jobs, store=tmp_path / "a.db", sweep="s", executor=pool)
    execute(jobs, store=tmp_path / "b.db", sweep="s", executor=pool, worker_writes=False)
    with Store(tmp_path / "a.db") as a, Store(tmp_path / "b.db") as b:
        assert [r.metrics for r in a.runs()] == [r.metrics for r in b.runs()]
        assert all(r.host and r.environment for r in b.runs())


def test_sweeps_share_runs_by_key(tmp_path, pool):
    db, log = tmp_path / "runs.db", tmp_path / "log"
    first = execute(toy_jobs(range(4), log=log), store=db, sweep="A", executor=pool)
    second = execute(toy_jobs(range(2, 6), log=log), store=db, sweep="B", executor=pool)
    assert (first.ok, second.ok, second.skipped) == (4, 2, 2)
    assert sorted(log_lines(log, "start")) == [str(i) for i in range(6)]
    with Store(db) as store:
        assert [r.seed for r in store.runs(sweep="B")] == [2, 3, 4, 5]
        assert len(store.runs()) == 6 and store.sweeps() == ["A", "B"]
        assert store.counts(sweep="B")["ok"] == 4


def test_resumes_a_run_left_running_by_a_dead_driver(tmp_path, pool):
    db = tmp_path / "runs.db"
    jobs = toy_jobs([7])
    with Store(db) as store:
        store.register("s", [jobs[0].run])
    key = jobs[0].run.key
    # A real driver process claims the run and dies without finishing it.
    code = f"from sgdtemp.storage import Store; Store({str(db)!r}).claim({key!r}, max_attempts=3)"
    subprocess.run([sys.executable, "-c", code], check=True)
    with Store(db) as store:
        assert store.run(key).status == "running"
    summary = execute(jobs, store=db, sweep="s", executor=pool)
    assert summary.ok == 1
    with Store(db) as store:
        assert store.run(key).attempts == 1  # the dead driver's claim cost no attempt
        assert [a.outcome for a in store.attempts(key)] == ["abandoned", "ok"]


def test_task_returning_an_outcome_or_a_bad_value(tmp_path, pool):
    jobs = [
        Job(NewRun(run_key({"x": 1}), {"x": 1}), _outcome_task),
        Job(NewRun(run_key({"x": 2}), {"x": 2}), _bad_status_task),
    ]
    summary = execute(jobs, store=tmp_path / "r.db", sweep="s", executor=pool)
    assert (summary.ok, summary.failed) == (1, 1)
    with Store(tmp_path / "r.db") as store:
        good, bad = store.runs()
        assert good.metrics == {"loss": None} and good.environment["device"] == "cpu"
        assert "task status must be one of" in bad.error


def _outcome_task():
    return Outcome("ok", {"loss": float("inf")}, device="cpu")


def _bad_status_task():
    return {"status": "great"}


def test_unstable_cells_are_skipped_without_running(tmp_path):
    grid = iso_temperature_grid([1e-3], [16, 64], epochs=1)  # lr 0.016 and 0.064
    summary = run(
        grid,
        _never_called,
        _never_called,
        store=tmp_path / "r.db",
        executor="local",
        workers=1,
        stability=Stability(sharpness=200.0, action="skip"),
        model_name="m",
        data_name="d",
    )
    assert (summary.unstable, summary.total) == (2, 2)
    with Store(tmp_path / "r.db") as store:
        lr_sharpness = [r.metrics["lr_sharpness"] for r in store.runs()]
        assert lr_sharpness == pytest.approx([1e-3 * 16 * 200, 1e-3 * 64 * 200])
        assert all(r.metrics["train_status"] == "skipped" for r in store.runs())
        assert [r.temperature for r in store.runs()] == pytest.approx([1e-3, 1e-3])


def _never_called():
    raise AssertionError("an unstable cell must not run")


def test_bad_arguments(tmp_path):
    import torch

    from sgdtemp.experiments.spec import Measurements

    with pytest.raises(UserError, match="max_attempts"):
        execute([], store=tmp_path / "r.db", sweep="s", max_attempts=0)
    with pytest.raises(UserError, match=r"measure\.shift: .*DataSplits"):
        run(
            [RunConfig(0.1, 8, 0, 1)],
            _never_called,
            (torch.zeros(8, 2), torch.zeros(8, dtype=torch.long)),
            store=tmp_path / "r.db",
            measure=Measurements(shift={}),
        )
    with pytest.raises(UserError, match=r"measure\.shift\.steps: unknown key"):
        run(
            [RunConfig(0.1, 8, 0, 1)],
            _never_called,
            _never_called,
            store=tmp_path / "r.db",
            eval_sets=["test"],
            measure=Measurements(shift={"steps": 5}),
        )
    assert not (tmp_path / "r.db").exists()  # nothing was created before the error


def test_describe_labels():
    import functools

    assert describe(ToyTask) == "sgdtemp.executors._toy.ToyTask"
    assert describe(functools.partial(ToyTask, "a", seed=2)).endswith("ToyTask('a', seed=2)")
    assert describe((1, 2)) == describe((1, 2)) != describe((1, 3))


def test_a_skipped_cell_pending_from_another_sweep_is_recorded_unstable(tmp_path, pool):
    config = {"cell": 1}
    pending = NewRun(run_key(config), config, lr=0.5)
    with Store(tmp_path / "r.db") as store:
        store.register("marks", [pending])  # another sweep registered it, to be run
    skip = NewRun(pending.key, config, lr=0.5, status="unstable", metrics={"lr_sharpness": 3})
    summary = execute([Job(skip, None)], store=tmp_path / "r.db", sweep="skips", executor=pool)
    assert summary.counts()["unstable"] == 1
    with Store(tmp_path / "r.db") as store:
        record = store.run(pending.key)
        assert (record.status, record.metrics) == ("unstable", {"lr_sharpness": 3})
