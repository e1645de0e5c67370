"""``sgdtemp stationary``: the Fokker–Planck stationary law of a synthetic landscape.

2-D landscapes are solved on a grid with the full, state-dependent diffusion tensor
(:mod:`sgdtemp.theory.fokker_planck_2d`); 1-D ones by the exact quadrature
(:func:`sgdtemp.theory.stationary_1d.stationary_density_1d`). Prints basin probabilities and the
Gibbs-in-L comparison; with ``--out`` writes ``stationary.npz``, ``stationary.json`` and figures,
including a histogram of SGD chains started from the computed law.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.integrate import trapezoid

from sgdtemp.cli._common import add_output_args, emit_json, ensure_out_dir
from sgdtemp.errors import UserError, require_positive
from sgdtemp.files import write_json
from sgdtemp.landscapes._base import AbstractLandscape, AbstractPerExampleLoss
from sgdtemp.landscapes.double_well_2d import DoubleWell2D, double_well_2d_loss
from sgdtemp.landscapes.two_minima import MixturePotential, TwoMinimaLoss, sample_two_minima_data
from sgdtemp.theory.fokker_planck_2d import (
    MIN_GRID,
    Stationary2D,
    effective_potential,
    stationary_2d,
)
from sgdtemp.theory.stationary_1d import basin_probability, gibbs_density_1d, stationary_density_1d
from sgdtemp.theory.temperature import lr_for_temperature

NOISES = ("isotropic", "data")
DETAILED_BALANCE_TOL = 1e-8  # current_ratio below this: detailed balance holds (to round-off)
SGD_MAX_LR_LAMBDA = 1.0  # skip the SGD histogram when lr * lambda_max is at least this
LIMITED_MASS_WARN = 1e-4  # warn when this much mass sits in cells with limited cross-diffusion
POINTS_PER_GRID_1D = 50  # the 1-D quadrature uses grid * this many points (at least 4001)


@dataclass(frozen=True)
class _Spec:
    """A landscape the command knows: its dimension, parameters with defaults, and builder."""

    dim: int
    params: dict[str, float]
    sigma: float  # default noise scale
    data_only: tuple[str, ...]  # parameters that only --noise data uses
    help: str
    build: Callable[
        [dict[str, float], str, float, int], tuple[AbstractLandscape, AbstractPerExampleLoss]
    ]


def _whitened_tilts(n: int, sigma: float, gen: torch.Generator, d: int) -> torch.Tensor:
    """Tilts with sample mean 0 and sample covariance exactly sigma^2 I, ``(n, d)``."""
    xi = torch.randn(n, d, generator=gen, dtype=torch.float64)
    xi = xi - xi.mean(dim=0)
    chol = torch.linalg.cholesky(xi.T @ xi / n)
    return sigma * xi @ torch.linalg.inv(chol).T


def _build_double_well(
    p: dict[str, float], noise: str, sigma: float, seed: int
) -> tuple[AbstractLandscape, AbstractPerExampleLoss]:
    gen = torch.Generator().manual_seed(seed)
    n = int(p["n"])
    if noise == "isotropic":
        sgd = double_well_2d_loss(
            n, t=p["t"], g=p["g"], translation_scale=0.0, tilt_scale=sigma, generator=gen
        )
        return DoubleWell2D(p["t"], p["g"], sigma=sigma), sgd
    loss = double_well_2d_loss(
        n, t=p["t"], g=p["g"], translation_scale=p["translation"], tilt_scale=sigma, generator=gen
    )
    return loss, loss


def _build_two_minima(
    p: dict[str, float], noise: str, sigma: float, seed: int
) -> tuple[AbstractLandscape, AbstractPerExampleLoss]:
    pot = MixturePotential(m=(p["m1"], p["m2"]), w=(p["w1"], p["w2"]), pi=(p["pi1"], 1 - p["pi1"]))
    gen = torch.Generator().manual_seed(seed)
    n = int(p["n"])
    if noise == "isotropic":
        xi = _whitened_tilts(n, sigma, gen, 1)[:, 0]
        loss = TwoMinimaLoss(pot, torch.zeros(n, dtype=torch.float64), xi)
    else:
        x, xi = sample_two_minima_data(
            n, translation_std=p["translation"], tilt_std=sigma, generator=gen
        )
        loss = TwoMinimaLoss(pot, x, xi)
    return loss, loss


LANDSCAPES: dict[str, _Spec] = {
    "double-well-2d": _Spec(
        dim=2,
        params={"t": -0.1, "g": 1.5, "translation": 0.2, "n": 1024},
        sigma=1.0,
        data_only=("translation", "n"),
        help="L = (x^2-1)^2 + t x + exp(g x) y^2 / 2 (2-D grid solver)",
        build=_build_double_well,
    ),
    "two-minima": _Spec(
        dim=1,
        params={
            "m1": -2.0,
            "m2": 2.0,
            "w1": 0.5,
            "w2": 1.5,
            "pi1": 0.4,
            "translation": 0.02,
            "n": 4096,
        },
        sigma=8.0,
        data_only=("translation",),
        help="1-D Gaussian-mixture potential (exact 1-D quadrature)",
        build=_build_two_minima,
    ),
}


def register(subparsers: Any) -> None:
    """Add ``stationary`` to the CLI."""
    names = ", ".join(f"{k} ({v.help})" for k, v in LANDSCAPES.items())
    parser = subparsers.add_parser(
        "stationary",
        help="Fokker-Planck stationary law and basin probabilities of a synthetic landscape",
        description="Stationary law of dθ = -∇L dt + sqrt(T C(θ)) dW: 2-D on a grid with the full, "
        "state-dependent noise tensor, 1-D exactly. Prints basin probabilities next to the Gibbs "
        f"law in L, the mass error and the stationary current. Landscapes: {names}.",
    )
    parser.add_argument("--landscape", required=True, metavar="NAME", help="landscape name")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="K=V",
        help="landscape parameter (repeatable); double-well-2d: t, g, and for --noise data "
        "translation (spread of the data translations) and n (examples); two-minima: m1, m2, "
        "w1, w2, pi1, translation, n",
    )
    parser.add_argument(
        "--noise",
        choices=NOISES,
        default="isotropic",
        help="isotropic: C = sigma^2 I (the Gibbs law is exact); data: C(θ) from per-example "
        "gradients of data drawn with --seed (anisotropic, state dependent)",
    )
    parser.add_argument(
        "--sigma",
        type=float,
        default=None,
        metavar="S",
        help="noise scale: C = S^2 I, or the spread of the data tilts under --noise data "
        "(default 1 for double-well-2d, 8 for two-minima)",
    )
    parser.add_argument("--temperature", type=float, required=True, metavar="T", help="T = lr/B")
    parser.add_argument(
        "--grid",
        type=int,
        default=200,
        metavar="N",
        help="about N x N cells in 2-D, shaped to the law (1-D: 50 N points)",
    )
    parser.add_argument(
        "--domain",
        type=float,
        nargs=4,
        metavar=("XMIN", "XMAX", "YMIN", "YMAX"),
        help="2-D box (default: chosen from the minima and the temperature)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and of SGD")
    parser.add_argument(
        "--sgd-chains",
        type=int,
        default=2000,
        metavar="K",
        help="SGD chains for the --out histogram",
    )
    parser.add_argument(
        "--sgd-steps", type=int, default=2000, metavar="N", help="SGD steps for the --out histogram"
    )
    add_output_args(parser)
    parser.set_defaults(handler=run)


# ----------------------------------------------------------------------------- input


def _parse_params(spec_name: str, items: list[str], noise: str) -> dict[str, float]:
    spec = LANDSCAPES[spec_name]
    params = dict(spec.params)
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise UserError(f"--param {item!r} is not of the form K=V")
        if key not in params:
            raise UserError(
                f"unknown parameter {key!r} for landscape {spec_name}; known: {', '.join(params)}"
            )
        if noise != "data" and key in spec.data_only:
            raise UserError(f"--param {key} applies only with --noise data")
        try:
            params[key] = float(value)
        except ValueError:
            raise UserError(f"--param {key}={value!r} is not a number") from None
        if not math.isfinite(params[key]):
            raise UserError(f"--param {key} must be finite, got {value}")
    if "n" in params and (params["n"] != int(params["n"]) or params["n"] < 3):
        raise UserError(f"--param n must be an integer >= 3, got {params['n']}")
    return params


def _validate(args: argparse.Namespace) -> tuple[_Spec, dict[str, float], float]:
    if args.landscape not in LANDSCAPES:
        raise UserError(
            f"unknown landscape {args.landscape!r}; choose one of {', '.join(LANDSCAPES)}"
        )
    spec = LANDSCAPES[args.landscape]
    require_positive("--temperature", args.temperature)
    sigma = spec.sigma if args.sigma is None else args.sigma
    require_positive("--sigma", sigma)
    if args.grid < MIN_GRID:
        raise UserError(f"--grid {args.grid} is too small; use at least {MIN_GRID}")
    if args.domain is not None and spec.dim != 2:
        raise UserError("--domain applies only to 2-D landscapes")
    require_positive("--sgd-chains", args.sgd_chains)
    require_positive("--sgd-steps", args.sgd_steps)
    _check_resources(args, spec.dim)
    return spec, _parse_params(args.landscape, args.param, args.noise), sigma


def _check_resources(args: argparse.Namespace, dim: int) -> None:
    """Refuse a grid or an SGD histogram larger than this machine can hold, before any work."""
    from sgdtemp.resources import (
        MAX_SIMULATED_STEPS,
        grid_1d_bytes,
        grid_2d_bytes,
        require_memory,
        require_steps,
        trajectory_bytes,
    )

    if dim == 2:
        need = grid_2d_bytes(float(args.grid) ** 2)
        what = f"--grid {args.grid} (about {float(args.grid) ** 2:.3g} cells)"
    else:
        need = grid_1d_bytes(max(POINTS_PER_GRID_1D * float(args.grid), 4001))
        what = f"--grid {args.grid} ({POINTS_PER_GRID_1D * float(args.grid):.3g} points)"
    require_memory(need, what=what, fix="use a smaller --grid (the default is 200)")
    if args.out is not None:  # the SGD histogram runs only with --out
        what = f"--sgd-chains {args.sgd_chains} x --sgd-steps {args.sgd_steps}"
        fix = "use fewer --sgd-chains or --sgd-steps"
        require_memory(
            trajectory_bytes(args.sgd_chains, args.sgd_steps, args.sgd_steps, dim),
            what=what,
            fix=fix,
        )
        require_steps(
            args.sgd_chains * args.sgd_steps, what=what, fix=fix, limit=MAX_SIMULATED_STEPS
        )


# ----------------------------------------------------------------------------- solving


@dataclass(frozen=True)
class _Result:
    summary: dict[str, Any]
    arrays: dict[str, Any]  # numpy arrays, for stationary.npz
    sample_cells: Callable[[np.random.Generator, int], np.ndarray]  # draws from the law
    basin_of: Callable[[np.ndarray], np.ndarray]  # labels of points (chains, d)


def _solve_2d(land: AbstractLandscape, args: argparse.Namespace) -> _Result:
    domain = tuple(args.domain) if args.domain is not None else None
    st: Stationary2D = stationary_2d(land, args.temperature, grid=args.grid, domain=domain)
    g = st.grid
    basins = [
        {
            "location": b.location,
            "probability": b.probability,
            "loss": b.loss,
            "hessian_eigenvalues": b.hessian_eigenvalues,
            "exact": b.exact,
        }
        for b in st.basins
    ]
    summary = {
        "grid": [g.nx, g.ny],
        "domain": [g.xmin, g.xmax, g.ymin, g.ymax],
        "basins": basins,
        "gibbs_basins": [
            {"location": b.location, "probability": b.gibbs_probability} for b in st.basins
        ],
        "gibbs_noise": st.gibbs_noise,
        "mass_error": st.mass_error,
        "residual": st.residual,
        "max_current": st.max_current,
        "current_ratio": st.current_ratio,
        "detailed_balance": st.current_ratio < DETAILED_BALANCE_TOL,
        "min_density": st.min_density,
        "positivity_guaranteed": True,
        "limited_cells": st.limited_cells,
        "limited_mass": st.limited_mass,
        "stencil_width": list(st.stencil_width),
        "boundary_mass": st.boundary_mass,
    }
    arrays = {
        "x": g.x,
        "y": g.y,
        "density": st.density,
        "loss": st.loss,
        "effective_potential": st.effective_potential,
        "current": st.current,
        "gibbs_density": st.gibbs_density,
        "gibbs_noise": np.array(st.gibbs_noise),
        "labels": st.labels,
    }

    def sample(rng: np.random.Generator, k: int) -> np.ndarray:
        w = np.clip(st.density, 0, None).ravel()
        cells = rng.choice(w.size, size=k, p=w / w.sum())
        i, j = np.divmod(cells, g.ny)
        jitter = rng.uniform(-0.5, 0.5, size=(k, 2)) * [g.hx, g.hy]
        return np.stack([g.x[i], g.y[j]], axis=-1) + jitter

    def basin_of(pts: np.ndarray) -> np.ndarray:
        i = np.clip(((pts[:, 0] - g.xmin) / g.hx).astype(int), 0, g.nx - 1)
        j = np.clip(((pts[:, 1] - g.ymin) / g.hy).astype(int), 0, g.ny - 1)
        return st.labels[i, j]

    return _Result(summary, arrays, sample, basin_of)


def _solve_1d(land: AbstractLandscape, args: argparse.Namespace) -> _Result:
    temp = args.temperature
    with torch.no_grad():
        mins = land.minimizers().to(torch.float64)  # (2, 1)
        h = land.hessian(mins)[:, 0, 0]
        c = land.noise_cov(mins)[:, 0, 0]
    if bool((c <= 0).any()):
        raise UserError("the noise variance vanishes at a minimum; increase --sigma")
    spread = torch.sqrt(temp * c / (2 * h)).numpy()
    x0, x1 = float(mins[0, 0]), float(mins[1, 0])
    lo = x0 - 12 * spread[0] - 0.5 * (x1 - x0)
    hi = x1 + 12 * spread[1] + 0.5 * (x1 - x0)
    n_points = max(POINTS_PER_GRID_1D * args.grid, 4001)
    x = np.linspace(lo, hi, n_points)
    if (hi - lo) / n_points > spread.min():
        need = math.ceil(args.grid * (hi - lo) / n_points / spread.min())
        raise UserError(
            f"--grid {args.grid} is too coarse to resolve the basins; use at least {need}"
        )
    with torch.no_grad():
        tx = torch.from_numpy(x).unsqueeze(-1)
        dl = land.grad(tx)[:, 0].numpy()
        cov = land.noise_cov(tx)[:, 0, 0].numpy()
        loss = land.loss(tx).numpy()
        barrier = float(land.barrier()) if isinstance(land, TwoMinimaLoss) else 0.5 * (x0 + x1)
    stat = stationary_density_1d(x, dl, cov, temp)
    deepest = int(np.argmin([float(v) for v in land.loss(mins)]))
    gibbs_noise = float(c[deepest])
    gibbs = gibbs_density_1d(x, loss, temp, gibbs_noise)
    bounds = [(lo, barrier), (barrier, hi)]
    basins = []
    for k, (a, b) in enumerate(bounds):
        basins.append(
            {
                "location": [float(mins[k, 0])],
                "probability": basin_probability(stat, a, b),
                "loss": float(land.loss(mins[k])),
                "hessian_eigenvalues": [float(h[k])],
                "exact": True,
            }
        )
    mass = float(trapezoid(stat.density, x))
    summary = {
        "grid": [n_points],
        "domain": [lo, hi],
        "basins": basins,
        "gibbs_basins": [
            {"location": [float(mins[k, 0])], "probability": basin_probability(gibbs, a, b)}
            for k, (a, b) in enumerate(bounds)
        ],
        "gibbs_noise": gibbs_noise,
        "mass_error": abs(mass - 1.0),
        "residual": 0.0,
        "max_current": 0.0,  # the exact 1-D law has zero flux
        "current_ratio": 0.0,
        "detailed_balance": True,
        "min_density": float(stat.density.min()),
        "positivity_guaranteed": True,
        "boundary_mass": float((stat.density[0] + stat.density[-1]) * (x[1] - x[0])),
        "method": "exact 1-D quadrature",
    }
    arrays = {
        "x": x,
        "density": stat.density,
        "loss": loss,
        "effective_potential": effective_potential(stat.density, temp),
        "gibbs_density": gibbs.density,
    }

    def sample(rng: np.random.Generator, k: int) -> np.ndarray:
        w = stat.density / stat.density.sum()
        return (x[rng.choice(x.size, size=k, p=w)] + rng.uniform(-0.5, 0.5, k) * (x[1] - x[0]))[
            :, None
        ]

    def basin_of(pts: np.ndarray) -> np.ndarray:
        return (pts[:, 0] > barrier).astype(np.int64)

    return _Result(summary, arrays, sample, basin_of)


def _run_sgd(
    loss: AbstractPerExampleLoss, res: _Result, args: argparse.Namespace
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """SGD chains started from the computed law; returns final states and a summary."""
    from sgdtemp.simulate import run_sgd  # only needed with --out

    lr = lr_for_temperature(args.temperature, 1)
    lam = max(max(b["hessian_eigenvalues"]) for b in res.summary["basins"])
    info: dict[str, Any] = {"lr": lr, "batch_size": 1, "lr_lambda_max": lr * lam}
    if lr * lam >= SGD_MAX_LR_LAMBDA:
        info["skipped"] = f"lr * lambda_max = {lr * lam:.3g} >= {SGD_MAX_LR_LAMBDA}: not SDE-like"
        return None, info
    rng = np.random.default_rng(args.seed)
    theta0 = torch.from_numpy(res.sample_cells(rng, args.sgd_chains))
    traj = run_sgd(
        loss,
        theta0,
        lr=lr,
        batch_size=1,
        n_steps=args.sgd_steps,
        record_every=args.sgd_steps,
        generator=torch.Generator().manual_seed(args.seed),
    )
    final = traj.final.numpy()
    labels = res.basin_of(final)
    n_basins = len(res.summary["basins"])
    info.update(
        chains=args.sgd_chains,
        steps=args.sgd_steps,
        basins=[float(np.mean(labels == k)) for k in range(n_basins)],
        start="sampled from the Fokker-Planck law: the histogram tests that SGD keeps it",
    )
    return final, info


# ----------------------------------------------------------------------------- command


def _print_table(summary: dict[str, Any]) -> None:
    print(
        f"{summary['landscape']} ({summary['noise']} noise, sigma={summary['sigma']:g}) at "
        f"T={summary['temperature']:g}, grid {' x '.join(map(str, summary['grid']))}"
    )
    print(f"{'basin':>6} {'location':>24} {'loss':>10} {'P (FP)':>10} {'P (Gibbs)':>10}")
    for k, (b, gb) in enumerate(zip(summary["basins"], summary["gibbs_basins"])):
        loc = ", ".join(f"{v:.4g}" for v in b["location"])
        print(
            f"{k:>6} {('(' + loc + ')'):>24} {b['loss']:>10.4g} {b['probability']:>10.4g} "
            f"{gb['probability']:>10.4g}"
        )
    balance = "holds" if summary["detailed_balance"] else "FAILS"
    print(
        f"mass error {summary['mass_error']:.2g}, max current {summary['max_current']:.3g} "
        f"(relative {summary['current_ratio']:.2g}: detailed balance {balance}), "
        f"min p {summary['min_density']:.2g}"
    )
    if "limited_cells" in summary:
        print(
            f"cells with limited cross-diffusion: {summary['limited_cells']} "
            f"(mass {summary['limited_mass']:.2g}); "
            f"mass on the box edge {summary['boundary_mass']:.2g}"
        )


def run(args: argparse.Namespace) -> int:
    """Handle ``sgdtemp stationary``."""
    # Everything here is small-tensor work, where intra-op threads only add contention.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace) -> int:
    spec, params, sigma = _validate(args)
    out = ensure_out_dir(args.out) if args.out is not None else None
    start = time.perf_counter()
    land, sgd_loss = spec.build(params, args.noise, sigma, args.seed)
    res = _solve_2d(land, args) if spec.dim == 2 else _solve_1d(land, args)
    summary = {
        "landscape": args.landscape,
        "params": params,
        "noise": args.noise,
        "sigma": sigma,
        "temperature": args.temperature,
        "seed": args.seed,
        **res.summary,
        "seconds": time.perf_counter() - start,
    }
    if summary.get("limited_mass", 0.0) > LIMITED_MASS_WARN:
        print(
            f"sgdtemp stationary: warning: {summary['limited_cells']} cells had their "
            f"cross-diffusion limited (mass there {summary['limited_mass']:.2g})",
            file=sys.stderr,
        )
    if out is not None:
        from sgdtemp.plotting.stationary import plot_stationary, save_figures

        samples, sgd_info = _run_sgd(sgd_loss, res, args)
        summary["sgd"] = sgd_info
        if samples is None:
            print(
                f"sgdtemp stationary: SGD histogram skipped: {sgd_info['skipped']}", file=sys.stderr
            )
        np.savez_compressed(out / "stationary.npz", **res.arrays)
        figures = plot_stationary(res.arrays, samples=samples)
        summary["files"] = [str(p) for p in save_figures(figures, out)] + [
            str(out / "stationary.npz"),
            str(out / "stationary.json"),
        ]
        write_json(out / "stationary.json", summary)
    if args.json:
        emit_json(summary)
    else:
        _print_table(summary)
        if out is not None:
            print(f"wrote {out}")
    return 0
