"""SDE (Euler–Maruyama) throughput in steps * chains per second on the tabulated two-minima loss.

Ours: ``sgdtemp.simulate.run_sde`` on ``Tabulated1D.from_landscape(two-minima loss)``.
Reference, measured in the same run: the same Euler–Maruyama loop written plainly in NumPy, with
the same tabulated drift and diffusion interpolated by ``np.interp``. Target: ours >= 5x.

    .venv/bin/python benchmarks/bench_sde.py [--chains 4096] [--steps 200] [--threads N]
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch

from _common import best_times
from sgdtemp.landscapes import MixturePotential, TwoMinimaLoss, sample_two_minima_data
from sgdtemp.simulate import Tabulated1D, run_sde

TARGET = 5.0


def reference_em(grid, drift, sd, theta, *, temperature, dt, n_steps, rng):
    """Plain NumPy Euler–Maruyama with np.interp lookups (the reference)."""
    scale = math.sqrt(temperature * dt)
    for _ in range(n_steps):
        z = rng.standard_normal(theta.shape[0])
        theta = theta - dt * np.interp(theta, grid, drift) + scale * np.interp(theta, grid, sd) * z
    return theta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", type=int, default=4096)
    parser.add_argument("--steps", type=int, default=200, help="steps per timed run")
    parser.add_argument("--n-grid", type=int, default=2001)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1, like the reference)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(0)
    x, xi = sample_two_minima_data(4096, translation_std=0.02, tilt_std=8.0, generator=gen)
    loss = TwoMinimaLoss(MixturePotential(), x, xi)
    start = time.perf_counter()
    tab = Tabulated1D.from_landscape(loss, -8.0, 10.0, args.n_grid)
    build = time.perf_counter() - start
    temperature, dt = 0.02, 0.01
    theta0 = loss.minimizers()[loss.wide].expand(args.chains, 1).clone()

    grid = tab.grid.unsqueeze(1)
    grid_np = grid[:, 0].numpy()
    drift, sd = tab.grad(grid)[:, 0].numpy(), tab.noise_sqrt(grid)[:, 0].numpy()
    rng = np.random.default_rng(0)
    th = theta0[:, 0].numpy().copy()

    def reference() -> None:
        reference_em(
            grid_np, drift, sd, th, temperature=temperature, dt=dt, n_steps=args.steps, rng=rng
        )

    def ours() -> None:
        run_sde(
            tab,
            theta0,
            temperature=temperature,
            dt=dt,
            n_steps=args.steps,
            record_every=args.steps,
            generator=torch.Generator().manual_seed(1),
        )

    (t_ref, t_ours), (c_ref, c_ours) = best_times([reference, ours], args.repeats)
    work = args.chains * args.steps
    print(
        f"threads: {torch.get_num_threads()}  load average: {os.getloadavg()[0]:.1f}  "
        f"chains: {args.chains}  grid: {args.n_grid} points (tabulated in {build:.2f} s)"
    )
    print(
        f"ours: {work / t_ours:.3e} steps*chains/s  reference: {work / t_ref:.3e}/s  "
        f"ratio: {t_ref / t_ours:.1f} (target >= {TARGET:g});  by CPU time: ratio "
        f"{c_ref / c_ours:.1f}"
    )


if __name__ == "__main__":
    main()
