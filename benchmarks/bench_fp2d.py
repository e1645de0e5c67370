"""2-D Fokker–Planck steady state on a 200 x 200 grid: time and mass error.

Cases: the double well with isotropic noise (the target case) and with data noise (full,
state-dependent tensor) on the same 200 x 200 grid and on about 200^2 cells shaped to the law
(what ``sgdtemp stationary --grid 200`` uses).

Ours: :class:`FokkerPlanck2D` built from the landscape (noise tensor, drift and potential on the
grid, Selling stencils, exponential-fitting rates) plus :meth:`FokkerPlanck2D.stationary` (one
pinned cell, sparse LU in nested-dissection order). Reference, measured in the same run on the
same matrix: fplanck's method for the steady state, ``scipy.sparse.linalg.eigs(A, k=1, sigma=0)``
(shift-invert Arnoldi with SuperLU's default ordering). Target: ours < 2 s, mass error < 1e-8.

Timings are interleaved and the best round is reported, which is the figure least disturbed by
other processes on a shared machine; each figure is given as wall time and as CPU time of this
process (``time.process_time``), with the 1-minute load average next to it, since on a loaded
machine wall time can be several times the CPU time. Torch runs single-threaded
(``--threads``): the grid evaluations are small, and intra-op threads only add contention on a
busy machine.

    .venv/bin/python benchmarks/bench_fp2d.py [--grid 200] [--rounds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from scipy.sparse.linalg import eigs

from sgdtemp.landscapes.double_well_2d import DoubleWell2D, double_well_2d_loss
from sgdtemp.theory.fokker_planck_2d import (
    Grid2D,
    auto_domain,
    fokker_planck_from_landscape,
    shaped_grid,
)

TARGET_SECONDS = 2.0
TARGET_MASS_ERROR = 1e-8
CASES = {  # name: (landscape, temperature, grid shaped to the law?)
    "isotropic": (lambda: DoubleWell2D(), 0.1, False),
    "data": (
        lambda: double_well_2d_loss(1024, generator=torch.Generator().manual_seed(0)),
        0.1,
        False,
    ),
    "data-shaped": (
        lambda: double_well_2d_loss(1024, generator=torch.Generator().manual_seed(0)),
        0.1,
        True,
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n = args.grid
    print(f"{n} x {n} grid, best of {args.rounds} rounds, torch threads {args.threads}")
    for name, (make, temperature, shaped) in CASES.items():
        land = make()
        box = auto_domain(land, temperature)
        grid = shaped_grid(land, temperature, box, n) if shaped else Grid2D(*box, n, n)
        print(f"{name}: {grid.nx} x {grid.ny} cells")
        ours, ours_cpu, ref, ref_cpu, build, solve, loads = [], [], [], [], [], [], []
        for _ in range(args.rounds):
            t0, c0 = time.perf_counter(), time.process_time()
            fp = fokker_planck_from_landscape(land, temperature, grid)
            t1 = time.perf_counter()
            p = fp.stationary()
            t2, c2 = time.perf_counter(), time.process_time()
            ours.append(t2 - t0)
            ours_cpu.append(c2 - c0)
            build.append(t1 - t0)
            solve.append(t2 - t1)
            t3, c3 = time.perf_counter(), time.process_time()
            _, vec = eigs(fp.operator.tocsc(), k=1, sigma=0, which="LM")
            ref.append(time.perf_counter() - t3)
            ref_cpu.append(time.process_time() - c3)
            loads.append(os.getloadavg()[0])
        p_ref = np.abs(vec[:, 0].real).reshape(grid.nx, grid.ny)
        p_ref /= p_ref.sum() * grid.cell_area
        mass, resid = fp.mass_error(p), fp.residual(p)
        best = min(ours)
        print(
            f"{name:>11}: ours {best:.3f} s wall, {min(ours_cpu):.3f} s CPU "
            f"(build {min(build):.3f} s + solve {min(solve):.3f} s wall), load {max(loads):.1f}; "
            f"mass error {mass:.1e}, residual {resid:.1e}, min p {p.min():.1e}, "
            f"limited cells {fp.limited_cells}"
        )
        print(
            f"{'':>11}  reference (eigs shift-invert, fplanck's method, solve only): "
            f"{min(ref):.3f} s wall, {min(ref_cpu):.3f} s CPU; max |p - p_ref| / max p = "
            f"{np.abs(p - p_ref).max() / p.max():.1e}"
        )
        ok = best < TARGET_SECONDS and mass < TARGET_MASS_ERROR
        print(
            f"{'':>11}  target < {TARGET_SECONDS} s and mass error < {TARGET_MASS_ERROR:g}: "
            f"{'met' if ok else 'NOT met'}; our solve is {min(ref) / min(solve):.1f}x the reference"
        )


if __name__ == "__main__":
    main()
