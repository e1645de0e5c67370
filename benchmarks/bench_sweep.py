"""Sweep orchestration overhead and 1 → 2 worker scaling (design.md: ≤ 3 %; ≥ 1.7×).

A sweep of small models (an MLP on a Fashion-MNIST subset, or digits with --quick) runs through
the local executor with warm workers (each worker has already loaded the data and imported
torch: that one-time start-up is reported separately). Printed next to each other:

- the runs' own training time (the trainer's ``seconds``, summed) and the sweep's wall time with
  one worker; overhead = wall / sum − 1 (target ≤ 3 %);
- the wall time with two workers; speed-up = wall(1) / wall(2) (target ≥ 1.7×);
- the engine's cost per run with a no-op task (claim, submit, record), for scale.

    .venv/bin/python benchmarks/bench_sweep.py [--quick] [--runs N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sgdtemp.executors import LocalExecutor
from sgdtemp.executors._toy import ToyTask
from sgdtemp.experiments.spec import DataOptions, product_grid
from sgdtemp.experiments.sweep import TRAIN_PRELOAD, DatasetSource, Job, execute, run
from sgdtemp.storage import NewRun, Store, run_key


def model_factory():
    from sgdtemp.train import build_model

    return build_model("mlp", in_shape=(1, 28, 28), n_classes=10, width=128)


def digits_factory():
    from sgdtemp.train import build_model

    return build_model("mlp", in_shape=(1, 8, 8), n_classes=10, width=64)


def sweep(pool, grid, factory, data, folder: Path, name: str):
    db = folder / f"{name}.db"
    start = time.perf_counter()
    summary = run(grid, factory, data, store=db, executor=pool, eval_sets=["test"], sweep=name)
    wall = time.perf_counter() - start
    with Store(db) as store:
        own = sum(r.metrics["seconds"] for r in store.runs())
    assert summary.ok == len(grid), summary
    return wall, own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits instead of Fashion-MNIST")
    parser.add_argument("--runs", type=int, default=8, help="runs per timed sweep")
    args = parser.parse_args()
    if args.quick:
        data = DatasetSource("digits", DataOptions(train_subset=1000))
        factory, epochs = digits_factory, 6
    else:
        data = DatasetSource("fashion-mnist", DataOptions(train_subset=4000))
        factory, epochs = model_factory, 2
    lrs = [0.05 * (1 + i) for i in range(args.runs)]

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        results = {}
        for workers in (1, 2):
            start = time.perf_counter()
            with LocalExecutor(workers, preload=TRAIN_PRELOAD, eager=True) as pool:
                warm = product_grid(lrs[:workers], [64], epochs=1, seeds=[99])
                sweep(pool, warm, factory, data, folder, f"warmup{workers}")
                startup = time.perf_counter() - start
                grid = product_grid(lrs, [64], epochs=epochs, seeds=[workers])
                wall, own = sweep(pool, grid, factory, data, folder, f"timed{workers}")
            results[workers] = (wall, own, startup)
            print(
                f"{workers} worker(s): wall {wall:.2f} s for {len(grid)} runs; runs' own "
                f"training time {own:.2f} s; one-time start-up (workers, imports, data) "
                f"{startup:.2f} s"
            )
        wall1, own1, _ = results[1]
        overhead = wall1 / own1 - 1
        print(
            f"orchestration overhead (1 worker): ours {wall1:.2f} s  reference (sum of runs' own "
            f"time) {own1:.2f} s  overhead {100 * overhead:.2f} % (target <= 3 %)"
        )
        wall2, own2, _ = results[2]
        print(
            f"scaling: 2 workers {wall2:.2f} s  reference 1 worker {wall1:.2f} s  speed-up "
            f"{wall1 / wall2:.2f}x (target >= 1.7x; the runs' own time grew by "
            f"{own2 / own1:.2f}x under 2 workers)"
        )

        print(
            f"busy fraction of 2 workers: ours {own2 / (2 * wall2):.3f}  reference 1.0  "
            "(the sweep keeps both workers busy; a speed-up below 1.7x with a busy fraction "
            "near 1 means the runs themselves slowed down: other load on the cores)"
        )

        jobs = []
        for i in range(200):
            config = {"noop": i}
            jobs.append(Job(NewRun(run_key(config), config), ToyTask(str(i), steps=0)))
        with LocalExecutor(2) as pool:
            execute(jobs[:4], store=folder / "noop-warm.db", sweep="w", executor=pool)
            start = time.perf_counter()
            execute(jobs, store=folder / "noop.db", sweep="noop", executor=pool)
            per_run = (time.perf_counter() - start) / len(jobs)
        print(f"engine cost per run (no-op task, 2 workers): {1000 * per_run:.2f} ms")


if __name__ == "__main__":
    main()
