"""Overhead of the temperature monitor on the reference CNN (Fashion-MNIST, CPU, 2 threads).

The same plain PyTorch loop (``torch.optim.SGD``, momentum 0.9, B = 64, one fixed sequence of
minibatches, the same initial weights) runs without the monitor and with it, interleaved over
rounds; each run's wall and CPU time (of this process) include building the monitor. Printed:

(a) the default cadence (``every=None``: probes only when they fit in ``budget`` = 2 % of the
    training time so far) against the bare loop, best of the rounds and the median of the
    paired per-round ratios, by CPU time (what other load on a shared machine moves least)
    and by wall time, with the 1-minute load average. Target: <= 3 %.
(b) the probe itself (at a fixed cadence): seconds per probe, Hessian-vector products per
    probe (warm-started Lanczos), the per-example pass, and the cost of the per-step
    bookkeeping, each in training steps, so the reader can size ``every`` or ``budget``.

Usage: python benchmarks/bench_monitor.py [--steps N] [--rounds R] [--probe K] [--threads T]
       [--train-subset N] [--data-root DIR]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import torch
import torch.nn.functional as F

from _common import load
from sgdtemp.data import load_dataset
from sgdtemp.monitor import TemperatureMonitor, TemperatureWarning
from sgdtemp.train import build_model

LR, MOMENTUM, BATCH = 0.05, 0.9, 64


def run(model, x, y, order, *, monitor_kwargs=None):
    """One training run over ``order`` (steps, B); returns (wall, cpu, monitor or None)."""
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    wall, cpu = time.perf_counter(), time.process_time()
    monitor = None
    if monitor_kwargs is not None:
        monitor = TemperatureMonitor(model, opt, F.cross_entropy, **monitor_kwargs)
    for idx in order:
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if monitor is not None:
            monitor.step(batch_size=BATCH, loss=loss)
    if monitor is not None:
        monitor.close()
    return time.perf_counter() - wall, time.process_time() - cpu, monitor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="training steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--probe", type=int, default=128, help="probe examples")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--train-subset", type=int, default=20000, help="training images")
    parser.add_argument("--data-root", default=None, help="Fashion-MNIST folder")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", TemperatureWarning)  # B vs B_noise notices: not timed here

    splits = load_dataset("fashion-mnist", root=args.data_root, train_subset=args.train_subset)
    x, y = splits.train.x, splits.train.y
    gen = torch.Generator().manual_seed(0)
    order = torch.randint(0, x.shape[0], (args.steps, BATCH), generator=gen)
    init = build_model("cnn", in_shape=(1, 28, 28), n_classes=10, generator=gen)
    probe = (x[-args.probe :], y[-args.probe :])
    default = {"probe": probe}
    print(f"reference CNN, {args.steps} steps of B={BATCH}, probe {args.probe}, "
          f"{args.threads} threads; {load()}", flush=True)  # fmt: skip

    run(copy.deepcopy(init), x, y, order[:20])  # warm-up: allocator, oneDNN kernels
    bare, monitored, last = [], [], None
    for r in range(args.rounds):
        bare.append(run(copy.deepcopy(init), x, y, order)[:2])
        wall, cpu, last = run(copy.deepcopy(init), x, y, order, monitor_kwargs=default)
        monitored.append((wall, cpu))
        print(f"  round {r}: bare {bare[-1][1]:.1f} s CPU ({bare[-1][0]:.1f} s wall), "
              f"monitored {cpu:.1f} s CPU ({wall:.1f} s wall), {len(last.probes)} probes; "
              f"{load()}", flush=True)  # fmt: skip
    for name, i in (("CPU", 1), ("wall", 0)):
        best = min(m[i] for m in monitored) / min(b[i] for b in bare) - 1
        paired = statistics.median(m[i] / b[i] - 1 for m, b in zip(monitored, bare))
        print(f"(a) default cadence, {name} time: overhead {100 * best:+.2f} % (best of "
              f"{args.rounds}), {100 * paired:+.2f} % (median paired); target <= 3 %")  # fmt: skip
    assert last is not None
    print(f"    the monitor's own account: {100 * last.overhead:.2f} % of the training time, "
          f"{len(last.probes)} probes at steps {[p.step for p in last.probes]}")  # fmt: skip

    # (b) the probe's cost, at a fixed cadence, against one training step
    steps = min(args.steps, 400)
    every = max(steps // 5, 1)
    step_wall, step_cpu, _ = run(copy.deepcopy(init), x, y, order[:steps])
    step_wall, step_cpu = step_wall / steps, step_cpu / steps
    _, _, fixed = run(
        copy.deepcopy(init), x, y, order[:steps], monitor_kwargs={**default, "every": every}
    )
    costs = [p.probe_seconds for p in fixed.probes if p.probe_seconds is not None]
    matvecs = [p.lanczos_matvecs for p in fixed.probes]
    print(f"(b) one training step: {1e3 * step_wall:.1f} ms wall, {1e3 * step_cpu:.1f} ms CPU")
    print(f"    probes every {every} steps: {', '.join(f'{c:.2f}' for c in costs)} s wall "
          f"(first {costs[0] / step_wall:.0f} steps, later median "
          f"{statistics.median(costs[1:]) / step_wall:.0f} steps); Hessian-vector products "
          f"{matvecs}; {load()}")  # fmt: skip
    model = copy.deepcopy(init)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    idle = TemperatureMonitor(model, opt, F.cross_entropy, probe=probe, every=10**9)
    tic = time.perf_counter()
    for _ in range(2000):
        idle.step(batch_size=BATCH)
    per_step = (time.perf_counter() - tic) / 2000
    print(f"    bookkeeping per step (no probe): {1e6 * per_step:.0f} us = "
          f"{100 * per_step / step_wall:.2f} % of a step")  # fmt: skip


if __name__ == "__main__":
    main()
