"""Fused sweeps: runs of one group trained as one task, recorded one by one.

The engine part runs toy tasks (their fused form runs them in order in one worker, reporting each
as it ends); the training part compares a digits sweep trained fused with the same sweep run one
by one (``fuse="off"``).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from sgdtemp.errors import UserError
from sgdtemp.executors._toy import ToyTask
from sgdtemp.experiments.engine import Job, execute
from sgdtemp.experiments.spec import parse_spec
from sgdtemp.experiments.sweep import fuse_size, parse_fuse, prepare_spec, run_spec
from sgdtemp.storage import NewRun, Store, run_key

#: Fused float32 training against one by one: the same arithmetic in another order (batched
#: products), so losses differ by rounding that training feeds back. Measured on this spec:
#: at most 5e-7 relative over 20 epochs (worst epoch and set; issue 13 asks 1e-5).
RTOL_FUSED = 1e-5


def _toy_jobs(n, log, *, group="g", die_first=0, dying=()):
    jobs = []
    for i in range(n):
        config = {"toy": i}
        task = ToyTask(str(i), seed=i, sleep=0.05, log=str(log), die_first=die_first * (i in dying))
        jobs.append(Job(NewRun(run_key(config), config, seed=i), task, group=group))
    return jobs


def _log(path: Path) -> list[tuple[str, str, int]]:
    return [(k, i, int(p)) for k, i, p in (line.split() for line in path.read_text().splitlines())]


def test_a_group_runs_in_one_worker_and_each_run_is_recorded_once(tmp_path):
    log = tmp_path / "log"
    summary = execute(
        _toy_jobs(6, log), store=tmp_path / "runs.db", sweep="s", workers=2, fuse=3, poll_s=0.05
    )
    assert summary.ok == 6
    entries = _log(log)
    pids = {ident: pid for kind, ident, pid in entries if kind == "start"}
    assert len({pids[str(i)] for i in range(3)}) == 1  # the first group shares one worker
    assert len({pids[str(i)] for i in range(3, 6)}) == 1
    with Store(tmp_path / "runs.db") as store:
        records = store.runs()
        assert sorted(r.seed for r in records) == list(range(6))
        for record in records:
            assert [a.outcome for a in store.attempts(record.key)] == ["ok"]


def test_a_worker_killed_mid_group_loses_no_finished_run(tmp_path):
    log = tmp_path / "log"
    # run 1, the second of its group, kills its worker on its first start
    jobs = _toy_jobs(3, log, die_first=1, dying=(1,))
    summary = execute(jobs, store=tmp_path / "runs.db", sweep="s", workers=1, fuse=3, poll_s=0.05)
    assert summary.ok == 3 and summary.failed == 0
    starts = [ident for kind, ident, _ in _log(log) if kind == "start"]
    assert starts.count("0") == 1  # finished before the kill: never run again
    assert starts.count("1") == 2  # killed, then retried
    with Store(tmp_path / "runs.db") as store:
        by_seed = {r.seed: r for r in store.runs()}
        assert [a.outcome for a in store.attempts(by_seed[0].key)] == ["ok"]
        assert [a.outcome for a in store.attempts(by_seed[1].key)] == ["lost", "ok"]
        assert all(r.status == "ok" for r in by_seed.values())


def test_jobs_of_different_groups_never_share_a_task(tmp_path):
    log = tmp_path / "log"
    jobs = _toy_jobs(2, log, group="a") + [
        Job(j.run, j.task, group="b") for j in _toy_jobs(4, log, group="b")[2:]
    ]
    execute(jobs, store=tmp_path / "runs.db", sweep="s", workers=1, fuse=4, poll_s=0.05)
    entries = _log(log)
    order = [ident for kind, ident, _ in entries if kind == "start"]
    assert sorted(order[:2]) == ["0", "1"] and sorted(order[2:]) == ["2", "3"]


@pytest.mark.parametrize("bad", ["0", "-2", "x", "1.5"])
def test_bad_fuse_is_a_one_line_error(bad):
    with pytest.raises(UserError, match="--fuse must be a positive integer"):
        parse_fuse(bad)


SPEC = textwrap.dedent(
    """\
    dataset = "digits"
    model = "mlp"
    epochs = 20
    seeds = [0, 1]
    eval = ["heldout", "test"]

    [data]
    train_subset = 1000
    heldout = 200
    seed = 1

    [model_args]
    width = 32

    [grid]
    lrs = [0.05, 0.1, 0.2, 30.0]
    batch_sizes = [16, 32]
    """
)


def test_rule_balances_groups_over_workers_and_memory(monkeypatch):
    jobs = prepare_spec(parse_spec(SPEC))  # 2 batch sizes x 8 runs
    assert fuse_size(jobs, workers=2) == 8  # one group per worker
    assert fuse_size(jobs, workers=4) == 4  # each group split in two
    assert fuse_size(jobs, workers=2, fuse="off") == 1
    assert fuse_size(jobs, workers=2, fuse=3) == 3
    from sgdtemp.experiments import fuse

    per_run = jobs[0].task.memory_bytes()
    # a machine with room for 2.5 runs per worker (the fault: little memory)
    monkeypatch.setattr(fuse, "_available_memory", lambda: int(2.5 * per_run * 2 * 2))
    assert fuse_size(jobs, workers=2) == 2
    with pytest.raises(UserError, match="choose at most --fuse 2"):
        fuse_size(jobs, workers=2, fuse=8)


@pytest.mark.slow
def test_fused_sweep_gives_the_store_of_the_one_by_one_sweep(tmp_path):
    (tmp_path / "spec.toml").write_text(SPEC)
    stores = {}
    for fuse in ("off", None):
        db = tmp_path / f"{fuse}.db"
        summary = run_spec(tmp_path / "spec.toml", store=db, workers=2, fuse=fuse)
        assert summary.total == 16
        with Store(db) as store:
            stores[fuse] = {r.key: r for r in store.runs()}
    assert stores["off"].keys() == stores[None].keys()
    statuses = set()
    for key, one in stores["off"].items():
        fused = stores[None][key]
        statuses.add(one.status)
        assert fused.status == one.status and fused.metrics["steps"] == one.metrics["steps"]
        assert len(fused.metrics["epochs"]) == len(one.metrics["epochs"])  # same stop epoch
        for a, b in zip(one.metrics["epochs"], fused.metrics["epochs"]):
            assert a["step"] == b["step"]
            for name in ("train", "heldout", "test"):
                assert b[name]["loss"] == pytest.approx(a[name]["loss"], rel=RTOL_FUSED)
    assert statuses == {"ok", "diverged"}  # lr 30 diverges inside its group, the others go on
    assert json.dumps(stores[None][key].config) == json.dumps(stores["off"][key].config)


def test_rule_keeps_every_worker_busy():
    from sgdtemp.experiments.fuse import _balanced

    # the quick profile: three batch sizes x 12 runs on two workers
    assert _balanced([12, 12, 12], 2, 16) == 6  # 6 tasks, 3 per worker (K = 12: one idles)
    assert _balanced([12, 12, 12], 3, 16) == 12  # one group per worker
    assert _balanced([40], 2, 16) == 11  # FUSE_MAX first, then 11, 11, 11, 7: 91 % busy
    assert _balanced([5], 4, 16) == 3  # never below half the largest K: 2 tasks, 42 % busy
    assert _balanced([7, 1], 2, 3) == 3  # the memory bound, and halving would not help
