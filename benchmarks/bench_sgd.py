"""Synthetic SGD throughput: per-example gradient evaluations per second (chains * B * steps / s).

Ours: ``sgdtemp.simulate.run_sgd`` on the two-minima loss (theory.md §5 data, N = 4096), with
and without replacement. Reference, measured in the same run: a straightforward vectorized
NumPy step (the mixture derivative by a stable log-sum-exp, float64) drawing its minibatches the
same way: ``rng.integers`` indices with replacement; without replacement, one
``rng.permuted`` row per chain each epoch, sliced into minibatches. Without replacement both
sides are timed over whole epochs, so the permutations are charged at their true rate. Ours is
also shown against the with-replacement reference, the cheaper of the two. Target: ours >= 10x
the reference of the same sampling.

    .venv/bin/python benchmarks/bench_sgd.py [--chains 4096] [--batch-size 32] [--threads N]
"""

from __future__ import annotations

import argparse
import math
import os

import numpy as np
import torch

from _common import best_times
from sgdtemp.landscapes import MixturePotential, TwoMinimaLoss, sample_two_minima_data
from sgdtemp.simulate import run_sgd

TARGET = 10.0


def reference_sgd(pot, x, xi, theta, *, lr, batch_size, n_steps, rng, replacement=True):
    """Plain vectorized NumPy minibatch SGD (the reference)."""
    m, w, pi = np.array(pot.m), np.array(pot.w), np.array(pot.pi)
    log_c = np.log(pi) - np.log(w) - 0.5 * math.log(2.0 * math.pi)
    n = x.shape[0]
    per_epoch = n // batch_size
    perm = np.empty((theta.shape[0], n), dtype=np.int64)
    for step in range(n_steps):
        if replacement:
            idx = rng.integers(0, n, size=(theta.shape[0], batch_size))
        else:
            k = step % per_epoch
            if k == 0:
                perm = rng.permuted(np.broadcast_to(np.arange(n), perm.shape), axis=1)
            idx = perm[:, k * batch_size : (k + 1) * batch_size]
        u = theta[:, None] - x[idx]  # (chains, B)
        z = (u[..., None] - m) / w  # (chains, B, 2)
        log_joint = log_c - 0.5 * z * z
        lse = np.logaddexp(log_joint[..., 0], log_joint[..., 1])
        resp = np.exp(log_joint - lse[..., None])
        du = (resp * z / w).sum(-1)
        g = du.mean(1) + xi[idx].mean(1)
        theta = theta - lr * g
    return theta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--steps",
        type=int,
        default=128,
        help="SGD steps per timed run (ours; whole epochs without replacement)",
    )
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

    ref_epoch_steps = loss.n_examples // b  # one whole epoch: one permutation per chain

    def reference_without() -> None:
        reference_sgd(
            pot,
            xn,
            xin,
            th,
            lr=lr,
            batch_size=b,
            n_steps=ref_epoch_steps,
            rng=rng,
            replacement=False,
        )

    # Without replacement ours also runs whole epochs (each starts with its permutations).
    epochs = max(1, round(args.steps / ref_epoch_steps))
    steps = {True: args.steps, False: epochs * ref_epoch_steps}

    def ours(replacement: bool) -> None:
        run_sgd(
            loss,
            theta0,
            lr=lr,
            batch_size=b,
            n_steps=steps[replacement],
            record_every=steps[replacement],
            replacement=replacement,
            generator=torch.Generator().manual_seed(1),
        )

    fns = [reference, reference_without, lambda: ours(True), lambda: ours(False)]
    wall, cpu = best_times(fns, args.repeats)
    evals = args.chains * b
    print(
        f"threads: {torch.get_num_threads()}  load average: {os.getloadavg()[0]:.1f}  "
        f"chains: {args.chains}  B: {b}  N: {loss.n_examples}"
    )
    refs = [
        (evals * args.ref_steps / wall[0], evals * args.ref_steps / cpu[0]),
        (evals * ref_epoch_steps / wall[1], evals * ref_epoch_steps / cpu[1]),
    ]
    labels = ("with replacement   ", "without replacement")
    for i, (label, t, t_cpu) in enumerate(zip(labels, wall[2:], cpu[2:])):
        n_steps = steps[i == 0]
        rate, rate_cpu = evals * n_steps / t, evals * n_steps / t_cpu
        (ref, ref_cpu), (cheap, cheap_cpu) = refs[i], refs[0]
        print(
            f"{label}  ours: {rate:.3e}/s  reference (same sampling): {ref:.3e}/s  "
            f"ratio: {rate / ref:.1f} (target >= {TARGET:g});  by CPU time: "
            f"{rate_cpu / ref_cpu:.1f}"
        )
        if i == 1:
            print(
                f"{'':21s}against the with-replacement reference: ratio {rate / cheap:.1f} "
                f"(by CPU time {rate_cpu / cheap_cpu:.1f})"
            )


if __name__ == "__main__":
    main()
