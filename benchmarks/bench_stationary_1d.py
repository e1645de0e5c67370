"""1-D stationary density of the two-minima loss: grid evaluation of L' and C plus Fokker–Planck.

10^4 grid points, N = 10^4 examples (theory.md §5 data). Times ``grad`` + ``noise_cov`` as two
calls, the fused ``grad_hessian_noise``, and ``sgdtemp.theory.stationary_density_1d`` on the
result. Target: grid evaluation + stationary density < 0.5 s.

    .venv/bin/python benchmarks/bench_stationary_1d.py [--points 10000] [--examples 10000]
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch

from sgdtemp.landscapes import MixturePotential, TwoMinimaLoss, sample_two_minima_data
from sgdtemp.theory import stationary_density_1d

TARGET_S = 0.5


def best_time(fn, repeats):
    """Best wall-clock and best CPU seconds over repeats, and the last result."""
    wall, cpu, out = math.inf, math.inf, None
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        wall = min(wall, time.perf_counter() - start)
        cpu = min(cpu, time.process_time() - start_cpu)
    return wall, cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--temperature", type=float, default=0.02)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1, like the reference)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(0)
    x, xi = sample_two_minima_data(args.examples, translation_std=0.02, tilt_std=8.0, generator=gen)
    loss = TwoMinimaLoss(MixturePotential(), x, xi)
    grid = torch.linspace(-8.0, 10.0, args.points, dtype=torch.float64).unsqueeze(1)

    sep, sep_cpu, _ = best_time(lambda: (loss.grad(grid), loss.noise_cov(grid)), args.repeats)
    fused, fused_cpu, out = best_time(lambda: loss.grad_hessian_noise(grid), args.repeats)
    g, dl, c = grid[:, 0].numpy(), out[0][:, 0].numpy(), out[2][:, 0, 0].numpy()
    dens, dens_cpu, law = best_time(
        lambda: stationary_density_1d(g, dl, c, args.temperature), args.repeats
    )
    barrier = float(loss.barrier()[0])
    p_wide = law.basin_probability(barrier, float(g[-1]))
    print(
        f"threads: {torch.get_num_threads()}  load average: {os.getloadavg()[0]:.1f}  "
        f"grid: {args.points} points  N: {args.examples} examples  (wall s / CPU s)"
    )
    print(f"grad + noise_cov (two calls): {sep:.3f} / {sep_cpu:.3f}")
    print(f"grad_hessian_noise (fused):   {fused:.3f} / {fused_cpu:.3f}")
    print(
        f"stationary_density_1d:        {dens:.3f} / {dens_cpu:.3f}   "
        f"(P_wide at T={args.temperature}: {p_wide:.3f})"
    )
    print(
        f"ours: {fused + dens:.3f} s  (CPU {fused_cpu + dens_cpu:.3f} s; grid evaluation + "
        f"stationary density; target < {TARGET_S} s)"
    )


if __name__ == "__main__":
    main()
