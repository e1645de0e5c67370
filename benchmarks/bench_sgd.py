"""Synthetic SGD throughput: per-example gradient evaluations per second (chains * B * steps / s).

Ours: ``sgdtemp.simulate.run_sgd`` on the two-minima loss (theory.md §5 data, N = 4096), with
and without replacement. Reference, measured in the same run: a straightforward vectorized
NumPy step (``rng.integers`` indices, the mixture derivative by a stable log-sum-exp, float64).
Target: ours >= 10x the reference.

    .venv/bin/python benchmarks/bench_sgd.py [--chains 4096] [--batch-size 32] [--threads N]
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch

from sgdtemp.landscapes import MixturePotential, TwoMinimaLoss, sample_two_minima_data
from sgdtemp.simulate import run_sgd

TARGET = 10.0


def reference_sgd(pot, x, xi, theta, *, lr, batch_size, n_steps, rng):
    """Plain vectorized NumPy minibatch SGD with replacement (the reference)."""
    m, w, pi = np.array(pot.m), np.array(pot.w), np.array(pot.pi)
    log_c = np.log(pi) - np.log(w) - 0.5 * math.log(2.0 * math.pi)
    n = x.shape[0]
    for _ in range(n_steps):
        idx = rng.integers(0, n, size=(theta.shape[0], batch_size))
        u = theta[:, None] - x[idx]  # (chains, B)
        z = (u[..., None] - m) / w  # (chains, B, 2)
        log_joint = log_c - 0.5 * z * z
        lse = np.logaddexp(log_joint[..., 0], log_joint[..., 1])
        resp = np.exp(log_joint - lse[..., None])
        du = (resp * z / w).sum(-1)
        g = du.mean(1) + xi[idx].mean(1)
        theta = theta - lr * g
    return theta


def best_times(fns, repeats):
    """Best wall-clock and best CPU seconds of each function over interleaved repeats.

    Interleaving and taking the best run keep the comparison fair on a busy machine: every
    function gets the same chances of an undisturbed run. CPU time (of this process) is
    reported too: it ignores time spent waiting for a busy CPU.
    """
    wall, cpu = [math.inf] * len(fns), [math.inf] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            wall[i] = min(wall[i], time.perf_counter() - start)
            cpu[i] = min(cpu[i], time.process_time() - start_cpu)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=128, help="SGD steps per timed run (ours)")
    parser.add_argument("--ref-steps", type=int, default=16, help="steps per timed run (reference)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1, like the reference)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(0)
    x, xi = sample_two_minima_data(4096, translation_std=0.02, tilt_std=8.0, generator=gen)
    pot = MixturePotential()
    loss = TwoMinimaLoss(pot, x, xi)
    theta0 = loss.minimizers()[loss.wide].expand(args.chains, 1).clone()
    lr, b = 0.01, args.batch_size
    rng = np.random.default_rng(0)
    xn, xin, th = x.numpy(), xi.numpy(), theta0[:, 0].numpy().copy()

    def reference() -> None:
        reference_sgd(pot, xn, xin, th, lr=lr, batch_size=b, n_steps=args.ref_steps, rng=rng)

    def ours(replacement: bool) -> None:
        run_sgd(
            loss,
            theta0,
            lr=lr,
            batch_size=b,
            n_steps=args.steps,
            record_every=args.steps,
            replacement=replacement,
            generator=torch.Generator().manual_seed(1),
        )

    wall, cpu = best_times([reference, lambda: ours(True), lambda: ours(False)], args.repeats)
    evals = args.chains * b
    print(
        f"threads: {torch.get_num_threads()}  load average: {os.getloadavg()[0]:.1f}  "
        f"chains: {args.chains}  B: {b}  N: {loss.n_examples}"
    )
    ref, ref_cpu = evals * args.ref_steps / wall[0], evals * args.ref_steps / cpu[0]
    labels = ("with replacement   ", "without replacement")
    for label, t, t_cpu in zip(labels, wall[1:], cpu[1:]):
        rate, rate_cpu = evals * args.steps / t, evals * args.steps / t_cpu
        print(
            f"{label}  ours: {rate:.3e}/s  reference: {ref:.3e}/s  ratio: {rate / ref:.1f} "
            f"(target >= {TARGET:g});  by CPU time: ratio {rate_cpu / ref_cpu:.1f}"
        )


if __name__ == "__main__":
    main()
