"""Sweep orchestration overhead and 1 → 2 worker scaling (design.md: ≤ 3 %; ≥ 1.7×).

A sweep of small models (an MLP on a Fashion-MNIST subset, or digits with --quick) runs through
the local executor with warm workers (each worker has already imported torch and loaded the data:
that one-time start-up is reported separately). Every worker runs single-threaded, so the runs are
CPU-bound on one core each. Printed, each next to its reference from the same run:

- per configuration (1 worker, 2 workers): the sweep's wall time, the runs' own training time
  (the trainer's ``seconds``, summed), the CPU time the workers spent in the runs, the driver's
  CPU time, and the cores the configuration actually got (CPU time / wall time);
- orchestration overhead with one worker: wall / runs' own time − 1 (target ≤ 3 %);
- speed-up = wall(1) / wall(2) (target ≥ 1.7×), next to what the CPU the runs got allows
  (cores got with 2 workers / cores got with 1): on a machine where other load leaves ~1 core,
  ~1× is expected; and the CPU time per run with 2 workers over that with 1, which exceeds 1 when
  the two cores slow each other down (SMT siblings of one physical core, shared caches);
- the engine's cost per run with a no-op task (claim, submit, record), for scale.

Run it on two quiet cores of a larger machine with

    taskset -c 0,1 .venv/bin/python benchmarks/bench_sweep.py [--runs N] [--epochs E]

(``--quick``: digits, seconds; ``--workers 1,2,4`` to add configurations).
"""

from __future__ import annotations

import os

# Inherited by the spawned workers, so each loads torch, OpenMP and BLAS with one thread.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

from sgdtemp.executors import LocalExecutor, usable_cpus  # noqa: E402
from sgdtemp.executors._toy import ToyTask  # noqa: E402
from sgdtemp.experiments.spec import DataOptions, product_grid  # noqa: E402
from sgdtemp.experiments.sweep import (  # noqa: E402
    TRAIN_PRELOAD,
    DatasetSource,
    Job,
    execute,
    run,
)
from sgdtemp.storage import NewRun, Store, run_key  # noqa: E402


def build_mlp(in_shape: tuple[int, ...], width: int):
    """The model factory (module level, so that spawned workers can unpickle it)."""
    from sgdtemp.train import build_model

    return build_model("mlp", in_shape=in_shape, n_classes=10, width=width)


@dataclass(frozen=True)
class Timing:
    workers: int
    runs: int
    wall: float  # the timed sweep's wall time
    own: float  # the runs' own training time (trainer's seconds), summed
    task: float  # the tasks' wall time in the workers, summed
    task_cpu: float  # the workers' CPU time during the tasks, summed
    driver_cpu: float  # this process's CPU time during the timed sweep
    startup: float  # workers started, torch imported, data loaded, first runs
    config_cpu: float  # CPU time of the whole configuration: workers (start-up too) + driver

    @property
    def cores(self) -> float:
        """Cores the timed sweep got: its CPU time over its wall time."""
        return (self.task_cpu + self.driver_cpu) / self.wall


def sweep(pool, grid, factory, data, folder: Path, name: str):
    db = folder / f"{name}.db"
    cpu0 = time.process_time()
    start = time.perf_counter()
    summary = run(grid, factory, data, store=db, executor=pool, eval_sets=["test"], sweep=name)
    wall = time.perf_counter() - start
    driver_cpu = time.process_time() - cpu0
    with Store(db) as store:
        own = sum(r.metrics["seconds"] for r in store.runs())
    assert summary.ok == len(grid), summary
    return summary, wall, own, driver_cpu


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(workers: int, lrs, epochs: int, batch_size: int, factory, data, folder) -> Timing:
    start, cpu0, child0 = time.perf_counter(), time.process_time(), children_cpu()
    with LocalExecutor(workers, preload=TRAIN_PRELOAD, eager=True) as pool:
        warm = product_grid(lrs[:workers], [batch_size], epochs=1, seeds=[99])
        sweep(pool, warm, factory, data, folder, f"warmup{workers}")
        startup = time.perf_counter() - start
        grid = product_grid(lrs, [batch_size], epochs=epochs, seeds=[workers])
        summary, wall, own, driver_cpu = sweep(pool, grid, factory, data, folder, f"t{workers}")
    # the workers have exited and been joined: their CPU time is in RUSAGE_CHILDREN now
    config_cpu = children_cpu() - child0 + time.process_time() - cpu0
    return Timing(
        workers,
        len(grid),
        wall,
        own,
        summary.task_seconds,
        summary.task_cpu_seconds,
        driver_cpu,
        startup,
        config_cpu,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits instead of Fashion-MNIST")
    parser.add_argument("--runs", type=int, default=8, help="runs per timed sweep (default 8)")
    # (the runs differ by their learning rate, spread over [0.01, 0.05])
    parser.add_argument("--epochs", type=int, help="epochs per run (default 3; 20 with --quick)")
    parser.add_argument(
        "--train-subset", type=int, help="training images (default 4000; 1000 with --quick)"
    )
    parser.add_argument("--width", type=int, default=128, help="MLP width (default 128)")
    parser.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    parser.add_argument(
        "--workers", default="1,2", help="worker counts to time, comma-separated (default 1,2)"
    )
    parser.add_argument("--noop-runs", type=int, default=200, help="runs of the no-op sweep")
    args = parser.parse_args()
    counts = sorted({int(w) for w in args.workers.split(",")} | {1})
    if args.quick:
        subset, in_shape, name = args.train_subset or 1000, (1, 8, 8), "digits"
        epochs = args.epochs or 20
    else:
        subset, in_shape, name = args.train_subset or 4000, (1, 28, 28), "fashion-mnist"
        epochs = args.epochs or 3
    data = DatasetSource(name, DataOptions(train_subset=subset))
    factory = partial(build_mlp, in_shape, args.width)
    lrs = [0.01 + 0.04 * i / max(args.runs - 1, 1) for i in range(args.runs)]  # all stable
    cores = usable_cpus()
    load = os.getloadavg()
    print(
        f"machine: {cores} usable core(s) of {os.cpu_count()}; load average before "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(
        f"sweep: {args.runs} runs of a {name} MLP (width {args.width}, {subset} images, "
        f"batch {args.batch_size}, {epochs} epochs, test set evaluated every epoch)"
    )
    if cores < max(counts):
        print(f"note: {max(counts)} workers on {cores} usable core(s): expect no full speed-up")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        results = {}
        for workers in counts:
            t = measure(workers, lrs, epochs, args.batch_size, factory, data, folder)
            results[workers] = t
            print(
                f"{workers} worker(s): wall {t.wall:.2f} s; runs' own time {t.own:.2f} s "
                f"({t.own / t.runs:.2f} s per run); workers' CPU in runs {t.task_cpu:.2f} s of "
                f"{t.task:.2f} s in tasks; driver CPU {t.driver_cpu:.2f} s; cores got "
                f"{t.cores:.2f} of {workers}; configuration CPU incl. start-up "
                f"{t.config_cpu:.2f} s; one-time start-up {t.startup:.2f} s"
            )
        one = results[1]
        overhead = one.wall / one.own - 1
        print(
            f"orchestration overhead (1 worker): ours {one.wall:.2f} s  reference (sum of runs' "
            f"own time) {one.own:.2f} s  overhead {100 * overhead:.2f} % (target <= 3 %)"
        )
        for workers, t in results.items():
            if workers == 1:
                continue
            allowed = (t.task_cpu / t.wall) / (one.task_cpu / one.wall)
            print(
                f"scaling: {workers} workers {t.wall:.2f} s  reference 1 worker {one.wall:.2f} s "
                f" speed-up {one.wall / t.wall:.2f}x (target >= 1.7x for 2 on 2 cores); "
                f"cores the runs got: {t.task_cpu / t.wall:.2f} with {workers} workers, "
                f"{one.task_cpu / one.wall:.2f} with 1 (1 and {min(workers, cores)} on a quiet "
                f"machine), so the CPU they got allows {allowed:.2f}x; per run, the own time grew "
                f"{(t.own / t.runs) / (one.own / one.runs):.2f}x and the CPU time "
                f"{(t.task_cpu / t.runs) / (one.task_cpu / one.runs):.2f}x (above 1: the cores "
                f"slow each other down, e.g. SMT siblings or shared caches); busy fraction "
                f"{t.task / (workers * t.wall):.3f}"
            )

        jobs = []
        for i in range(args.noop_runs):
            config = {"noop": i}
            jobs.append(Job(NewRun(run_key(config), config), ToyTask(str(i), steps=0)))
        with LocalExecutor(2) as pool:
            execute(jobs[:4], store=folder / "noop-warm.db", sweep="w", executor=pool)
            cpu0 = time.process_time()
            start = time.perf_counter()
            execute(jobs, store=folder / "noop.db", sweep="noop", executor=pool)
            per_run = (time.perf_counter() - start) / len(jobs)
            driver = (time.process_time() - cpu0) / len(jobs)
        print(
            f"engine cost per run (no-op task, 2 workers): {1000 * per_run:.2f} ms wall, "
            f"{1000 * driver:.2f} ms driver CPU"
        )


if __name__ == "__main__":
    main()
