"""A profile's sweep stage fused (runs of one batch size trained together) vs ``--fuse off``.

    python benchmarks/bench_sweep_fuse.py [--profile quick] [--workers 2] [--budget-scale 1.0]
                                         [--training-only]

Runs the profile's sweep spec twice into fresh stores, first with ``--fuse off`` (every run its
own worker task) and then with the rule (``--fuse auto``), on the same local pool size, and
prints the wall time, the summed CPU time of the workers and the speed-up, next to each other
from the same run. ``--budget-scale`` multiplies the stationary budget (and the epochs of a
fixed-epoch spec) to get a figure quickly; 1.0 is the profile itself. ``--training-only`` drops the
per-run measurements (curvature, mechanisms), which cost the same fused or not, so that the figure
is the training's own. The stores are checked to
hold the same statuses and, within the tolerance of tests/experiments/test_sweep_fuse.py, the
same final losses. Issue 13's target: fused at least 3x the one-by-one sweep on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import time
from pathlib import Path

from _common import load
from sgdtemp.experiments.engine import execute
from sgdtemp.experiments.reproduce import PROFILES, profile_spec
from sgdtemp.experiments.spec import Measurements
from sgdtemp.experiments.sweep import fuse_size, prepare_spec, worker_count
from sgdtemp.storage import Store


def scaled(spec, factor: float):
    """The spec with its budget scaled (stationary budget, or epochs)."""
    if factor == 1.0:
        return spec
    if spec.stop is not None:
        stop = dataclasses.replace(spec.stop, max_sde_time=spec.stop.max_sde_time * factor)
        return dataclasses.replace(spec, stop=stop)
    grid = tuple(dataclasses.replace(c, epochs=max(1, round(c.epochs * factor))) for c in spec.grid)
    return dataclasses.replace(spec, grid=grid)


def run(spec, folder: Path, fuse: str, workers: int) -> tuple[float, float, dict]:
    db = folder / f"{fuse}.db"
    jobs = prepare_spec(spec, artifacts=folder / f"{fuse}.artifacts")
    k = fuse_size(jobs, workers=worker_count("local", workers), fuse=fuse)
    start = time.perf_counter()
    summary = execute(jobs, store=db, sweep=spec.name, workers=workers, fuse=k)
    wall = time.perf_counter() - start
    with Store(db, readonly=True) as store:
        records = {r.key: r for r in store.runs(sweep=spec.name)}
    print(
        f"  --fuse {fuse:<4} (K = {k:2d}): {wall:8.1f} s wall, {summary.task_cpu_seconds:8.1f} s "
        f"worker CPU, {summary.counts()}",
        flush=True,
    )
    return wall, summary.task_cpu_seconds, records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--budget-scale", type=float, default=1.0)
    parser.add_argument("--training-only", action="store_true", help="no per-run measurements")
    args = parser.parse_args()
    spec = scaled(profile_spec(PROFILES[args.profile]), args.budget_scale)
    if args.training_only:
        spec = dataclasses.replace(spec, measure=Measurements())
    what = "training only" if args.training_only else "with its measurements"
    print(f"{args.profile} sweep ({len(spec.grid)} runs, {what}), {args.workers} workers; {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        off_wall, off_cpu, off = run(spec, Path(tmp), "off", args.workers)
        on_wall, on_cpu, on = run(spec, Path(tmp), "auto", args.workers)
    worst = 0.0
    for key, a in off.items():
        b = on[key]
        assert a.status == b.status, (a.status, b.status)
        la = a.metrics["epochs"][-1]["train"]["loss"]
        lb = b.metrics["epochs"][-1]["train"]["loss"]
        worst = max(worst, abs(la - lb) / abs(la))
    print(
        f"fused vs one by one: {off_wall / on_wall:.2f}x wall, {off_cpu / on_cpu:.2f}x worker CPU "
        f"(target >= 3x); statuses equal, final train losses within {worst:.1e} relative; "
        f"{load()}"
    )
    return 0 if math.isfinite(worst) else 1


if __name__ == "__main__":
    sys.exit(main())
