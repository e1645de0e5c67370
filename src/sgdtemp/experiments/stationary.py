"""The ``sgdtemp stationary`` study: a landscape's Fokker–Planck law, and SGD started from it.

2-D landscapes are solved on a grid with the full, state-dependent diffusion tensor
(:mod:`sgdtemp.theory.fokker_planck_2d`, with its verdict on how far the basin probabilities can
be trusted); 1-D ones by the exact quadrature
(:func:`sgdtemp.theory.stationary_1d.stationary_density_1d`). :func:`run_stationary` returns the
summary (basin probabilities next to the Gibbs law in L), the arrays and, on request, SGD chains
started from the computed law (whether SGD keeps it); :func:`write_stationary` writes
``stationary.npz``, ``stationary.json`` and the figures.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.integrate import trapezoid

from sgdtemp.errors import UserError, require_positive
from sgdtemp.experiments.stationary_witness import basin_labels, sample_law
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
from sgdtemp.theory.fokker_planck_2d.stationary import (
    BOUNDARY_MASS_TOL,
    LIMITED_FLUX_TOL,
    WALL_SENSITIVITY_TOL,
)
from sgdtemp.theory.stationary_1d import basin_probability, gibbs_density_1d, stationary_density_1d
from sgdtemp.theory.temperature import lr_for_temperature

__all__ = [
    "LANDSCAPES",
    "NOISES",
    "StationaryRequest",
    "StationaryStudy",
    "landscape_params",
    "run_stationary",
    "write_stationary",
]

NOISES = ("isotropic", "data")
DETAILED_BALANCE_TOL = 1e-8  # current_ratio below this: detailed balance holds (to round-off)
SGD_MAX_LR_LAMBDA = 1.0  # skip the SGD histogram when lr * lambda_max is at least this
LIMITED_MASS_WARN = 1e-4  # warn when this much mass sits in cells with limited cross-diffusion
POINTS_PER_GRID_1D = 50  # the 1-D quadrature uses grid * this many points (at least 4001)


@dataclass(frozen=True)
class _Spec:
    """A landscape the study knows: its dimension, parameters with defaults, and builder."""

    dim: int
    params: dict[str, float]
    sigma: float  # default noise scale
    data_only: tuple[str, ...]  # parameters that only the data noise uses
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


def landscape_params(name: str, overrides: Mapping[str, float], noise: str) -> dict[str, float]:
    """The landscape's parameters: its defaults with ``overrides``, validated.

    Raises:
        UserError: on an unknown landscape or parameter, a data-only parameter without data
            noise, a non-finite value, or an ``n`` that is not an integer >= 3.
    """
    if name not in LANDSCAPES:
        raise UserError(f"unknown landscape {name!r}; choose one of {', '.join(LANDSCAPES)}")
    spec = LANDSCAPES[name]
    params = dict(spec.params)
    for key, value in overrides.items():
        if key not in params:
            raise UserError(
                f"unknown parameter {key!r} for landscape {name}; known: {', '.join(params)}"
            )
        if noise != "data" and key in spec.data_only:
            raise UserError(f"--param {key} applies only with --noise data")
        if not math.isfinite(value):
            raise UserError(f"--param {key} must be finite, got {value}")
        params[key] = float(value)
    if "n" in params and (params["n"] != int(params["n"]) or params["n"] < 3):
        raise UserError(f"--param n must be an integer >= 3, got {params['n']}")
    return params


@dataclass(frozen=True)
class StationaryRequest:
    r"""What :func:`run_stationary` computes.

    Attributes:
        landscape: a name in :data:`LANDSCAPES`.
        temperature: $T = \eta/B > 0$.
        params: parameter overrides (see :func:`landscape_params`).
        noise: ``"isotropic"`` or ``"data"``.
        sigma: noise scale (None: the landscape's default).
        grid: about ``grid * grid`` cells in 2-D (1-D: ``50 * grid`` points).
        domain: the 2-D box ``(xmin, xmax, ymin, ymax)`` (None: chosen from the minima and T).
        seed: seed of the data and of SGD.
        sgd_chains: SGD chains started from the law (0: no SGD check).
        sgd_steps: their steps.
    """

    landscape: str
    temperature: float
    params: Mapping[str, float] = field(default_factory=dict)
    noise: str = "isotropic"
    sigma: float | None = None
    grid: int = 200
    domain: tuple[float, float, float, float] | None = None
    seed: int = 0
    sgd_chains: int = 0
    sgd_steps: int = 2000


@dataclass(frozen=True, eq=False)
class StationaryStudy:
    """The result of :func:`run_stationary`.

    Attributes:
        summary: JSON-ready summary (landscape, basins, Gibbs basins, diagnostics, verdicts).
        arrays: the arrays of ``stationary.npz`` (grid, density, loss, effective potential, ...).
        samples: final states of the SGD chains, ``(chains, d)`` (None: no SGD check, or
            skipped; ``summary["sgd"]`` says why).
        warnings: one line per diagnostic that should not be missed.
    """

    summary: dict[str, Any]
    arrays: dict[str, np.ndarray]
    samples: np.ndarray | None
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class _Law:
    summary: dict[str, Any]
    arrays: dict[str, Any]
    sample: Callable[[np.random.Generator, int], np.ndarray]  # draws from the law
    basin_of: Callable[[np.ndarray], np.ndarray]  # labels of points (chains, d)


def _check(request: StationaryRequest) -> tuple[_Spec, dict[str, float], float]:
    params = landscape_params(request.landscape, request.params, request.noise)
    spec = LANDSCAPES[request.landscape]
    if request.noise not in NOISES:
        raise UserError(f"unknown noise {request.noise!r}; choose one of {', '.join(NOISES)}")
    require_positive("--temperature", request.temperature)
    sigma = spec.sigma if request.sigma is None else request.sigma
    require_positive("--sigma", sigma)
    if request.grid < MIN_GRID:
        raise UserError(f"--grid {request.grid} is too small; use at least {MIN_GRID}")
    if request.domain is not None and spec.dim != 2:
        raise UserError("--domain applies only to 2-D landscapes")
    if request.sgd_chains < 0:
        raise UserError(f"--sgd-chains must be >= 0, got {request.sgd_chains}")
    require_positive("--sgd-steps", request.sgd_steps)
    _check_resources(request, spec.dim)
    return spec, params, sigma


def _check_resources(request: StationaryRequest, dim: int) -> None:
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
        need = grid_2d_bytes(float(request.grid) ** 2)
        what = f"--grid {request.grid} (about {float(request.grid) ** 2:.3g} cells)"
    else:
        need = grid_1d_bytes(max(POINTS_PER_GRID_1D * float(request.grid), 4001))
        what = f"--grid {request.grid} ({POINTS_PER_GRID_1D * float(request.grid):.3g} points)"
    require_memory(need, what=what, fix="use a smaller --grid (the default is 200)")
    if request.sgd_chains > 0:  # the SGD histogram
        chains, steps = request.sgd_chains, request.sgd_steps
        what = f"--sgd-chains {chains} x --sgd-steps {steps}"
        fix = "use fewer --sgd-chains or --sgd-steps"
        require_memory(trajectory_bytes(chains, steps, steps, dim), what=what, fix=fix)
        require_steps(chains * steps, what=what, fix=fix, limit=MAX_SIMULATED_STEPS)


def _solve_2d(land: AbstractLandscape, request: StationaryRequest) -> _Law:
    st: Stationary2D = stationary_2d(
        land, request.temperature, grid=request.grid, domain=request.domain
    )
    g = st.grid
    basins = [
        {
            "location": b.location,
            "probability": b.probability,
            "probability_projected": b.probability_projected,
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
        "limited_flux": st.limited_flux,
        "limited_flux_ratio": st.limited_flux_ratio,
        "exchange_flux": st.exchange_flux,
        "walls": st.walls,
        "wall_flux": st.wall_flux,
        "wall_flux_ratio": st.wall_flux_ratio,
        "wall_sensitivity": st.wall_sensitivity,
        "trusted": st.trusted,
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
    return _Law(
        summary, arrays, lambda rng, k: sample_law(st, rng, k), lambda pts: basin_labels(st, pts)
    )


def _solve_1d(land: AbstractLandscape, request: StationaryRequest) -> _Law:
    temp = request.temperature
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
    n_points = max(POINTS_PER_GRID_1D * request.grid, 4001)
    x = np.linspace(lo, hi, n_points)
    if (hi - lo) / n_points > spread.min():
        need = math.ceil(request.grid * (hi - lo) / n_points / spread.min())
        raise UserError(
            f"--grid {request.grid} is too coarse to resolve the basins; use at least {need}"
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

    return _Law(summary, arrays, sample, basin_of)


def _run_sgd(
    loss: AbstractPerExampleLoss, law: _Law, request: StationaryRequest
) -> tuple[np.ndarray | None, dict[str, Any]]:
    """SGD chains started from the computed law; returns final states and a summary."""
    from sgdtemp.simulate import run_sgd

    lr = lr_for_temperature(request.temperature, 1)
    lam = max(max(b["hessian_eigenvalues"]) for b in law.summary["basins"])
    info: dict[str, Any] = {"lr": lr, "batch_size": 1, "lr_lambda_max": lr * lam}
    if lr * lam >= SGD_MAX_LR_LAMBDA:
        info["skipped"] = f"lr * lambda_max = {lr * lam:.3g} >= {SGD_MAX_LR_LAMBDA}: not SDE-like"
        return None, info
    rng = np.random.default_rng(request.seed)
    theta0 = torch.from_numpy(law.sample(rng, request.sgd_chains))
    traj = run_sgd(
        loss,
        theta0,
        lr=lr,
        batch_size=1,
        n_steps=request.sgd_steps,
        record_every=request.sgd_steps,
        generator=torch.Generator().manual_seed(request.seed),
    )
    final = traj.final.numpy()
    labels = law.basin_of(final)
    n_basins = len(law.summary["basins"])
    info.update(
        chains=request.sgd_chains,
        steps=request.sgd_steps,
        basins=[float(np.mean(labels == k)) for k in range(n_basins)],
        start="sampled from the Fokker-Planck law: the histogram tests that SGD keeps it",
    )
    return final, info


def _warnings(summary: Mapping[str, Any]) -> list[str]:
    """One line per diagnostic of the 2-D law that should not be missed."""
    out = []
    if summary.get("limited_mass", 0.0) > LIMITED_MASS_WARN:
        out.append(
            f"{summary['limited_cells']} cells had their cross-diffusion limited (mass there "
            f"{summary['limited_mass']:.2g})"
        )
    if summary.get("trusted", True):
        return out
    why = []
    if not summary["wall_sensitivity"] <= WALL_SENSITIVITY_TOL:
        probs = ", ".join(
            f"{b['probability']:.4g} vs {b['probability_projected']:.4g}" for b in summary["basins"]
        )
        why.append(
            f"they depend on the walls of the box (no-flux vs projecting walls: {probs}): the "
            "noise far out carries probability flux, so the law is the box's as much as the "
            "landscape's"
        )
    if summary["limited_flux_ratio"] > LIMITED_FLUX_TOL:
        why.append(
            f"the process passes through the {summary['limited_cells']} cells with limited "
            f"cross-diffusion {summary['limited_flux_ratio']:.2g} times per passage between basins"
        )
    if summary["boundary_mass"] > BOUNDARY_MASS_TOL:
        why.append(f"the box edge holds {summary['boundary_mass']:.2g} of the mass")
    out.append("basin probabilities not trusted: " + "; ".join(why))
    return out


def run_stationary(request: StationaryRequest) -> StationaryStudy:
    """Solve the stationary law of ``request``'s landscape, and run SGD from it if asked.

    Args:
        request: the landscape, temperature, grid and SGD check.

    Returns:
        The :class:`StationaryStudy`.

    Raises:
        UserError: on bad input (named, with the fix), before any work.
    """
    spec, params, sigma = _check(request)
    start = time.perf_counter()
    land, sgd_loss = spec.build(params, request.noise, sigma, request.seed)
    law = _solve_2d(land, request) if spec.dim == 2 else _solve_1d(land, request)
    summary: dict[str, Any] = {
        "landscape": request.landscape,
        "params": params,
        "noise": request.noise,
        "sigma": sigma,
        "temperature": request.temperature,
        "seed": request.seed,
        **law.summary,
    }
    samples = None
    if request.sgd_chains > 0:
        samples, summary["sgd"] = _run_sgd(sgd_loss, law, request)
    summary["seconds"] = time.perf_counter() - start
    return StationaryStudy(summary, law.arrays, samples, tuple(_warnings(summary)))


def write_stationary(study: StationaryStudy, out: Path) -> dict[str, Any]:
    """Write ``stationary.npz``, the figures and ``stationary.json`` into ``out``.

    Returns:
        The summary as written, with the list of ``files``.
    """
    from sgdtemp.files import atomic_writer
    from sgdtemp.plotting.stationary import plot_stationary, save_figures

    arrays: dict[str, Any] = dict(study.arrays)
    with atomic_writer(out / "stationary.npz") as handle:
        np.savez_compressed(handle, **arrays)
    figures = plot_stationary(study.arrays, samples=study.samples)
    summary = dict(study.summary)
    summary["files"] = [str(p) for p in save_figures(figures, out)] + [
        str(out / "stationary.npz"),
        str(out / "stationary.json"),
    ]
    write_json(out / "stationary.json", summary)
    return summary
