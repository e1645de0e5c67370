"""One (noise model, T, B) cell: SGD, its SDE, the exact Fokker–Planck and Gibbs laws, test loss."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from sgdtemp.experiments.two_minima.config import TwoMinimaConfig
from sgdtemp.experiments.two_minima.landscape import (
    Basins,
    NoiseModelLandscape,
    TestSet,
    on_grid,
)
from sgdtemp.experiments.two_minima.plan import CellPlan
from sgdtemp.experiments.two_minima.sampling import sampling_label, sampling_temperature
from sgdtemp.simulate import Trajectory, run_sde, run_sgd
from sgdtemp.theory import (
    ShiftDecomposition,
    Stationary1D,
    basin_probability,
    decompose_test_loss,
    gibbs_density_1d,
    mean_and_var,
    mix_decompositions,
    stationary_density_1d,
    temperature,
)

__all__ = ["run_cell"]

# Comparable cells (SGD and SDE vs Fokker-Planck) have lr * lambda_max at most this, and must
# agree with Fokker-Planck within these.
COMPARABLE_LR_SHARPNESS = 0.3
SGD_TOL = 0.05
SDE_TOL = 0.03
# Chains started in either basin disagree beyond this many standard errors of the difference
# (or equilibration_tol, whichever is larger): not equilibrated.
START_GAP_Z = 3.0
# Histogram bins of the densities figure.
HIST_BINS = 240


def _wide_fraction(
    traj: Trajectory, basins: Basins, burn_in: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-chain fraction of recorded post-burn-in time in the wide basin, and the samples."""
    thetas = traj.thetas[..., 0].numpy()  # (R, chains)
    keep = thetas[int(round(burn_in * thetas.shape[0])) :]
    frac = basins.wide_mask(keep).mean(axis=0)  # (chains,)
    return frac, keep.reshape(-1)


def _sim_stats(frac: np.ndarray, starts_wide: np.ndarray, tol: float) -> dict[str, Any]:
    """Wide-basin probability ± standard error over chains, and the either-start agreement."""
    from_wide, from_sharp = frac[starts_wide], frac[~starts_wide]
    gap = float(from_wide.mean() - from_sharp.mean())
    gap_err = math.sqrt(
        from_wide.var(ddof=1) / from_wide.size + from_sharp.var(ddof=1) / from_sharp.size
    )
    return {
        "p_wide": float(frac.mean()),
        "stderr": float(frac.std(ddof=1) / math.sqrt(frac.size)),
        "p_wide_from_wide_start": float(from_wide.mean()),
        "p_wide_from_sharp_start": float(from_sharp.mean()),
        "start_gap": gap,
        "start_gap_stderr": gap_err,
        "equilibrated": bool(abs(gap) <= max(tol, START_GAP_Z * gap_err)),
    }


def _p_wide(stat: Stationary1D, basins: Basins) -> float:
    if basins.wide == 1:
        return float(basin_probability(stat, basins.barrier, math.inf))
    return float(basin_probability(stat, -math.inf, basins.barrier))


def _decomp_dict(d: ShiftDecomposition) -> dict[str, float]:
    keys = (
        "vertical",
        "shift_curvature",
        "cross",
        "bias_curvature",
        "covariance_curvature",
        "predicted_test_loss",
    )
    return {k: float(np.asarray(getattr(d, k)).reshape(-1)[0]) for k in keys}


def _mixed(
    per_basin: dict[str, Any], parts: list[ShiftDecomposition], probs: list[float]
) -> dict[str, Any]:
    mixed = mix_decompositions(parts, np.asarray(probs) / sum(probs)) if parts else None
    return {"per_basin": per_basin, "mixed": _decomp_dict(mixed) if mixed is not None else None}


def _decomposition(
    samples: np.ndarray,
    landscape: NoiseModelLandscape,
    test: TestSet,
) -> dict[str, Any]:
    """Test-loss decomposition per basin from SGD samples, mixed by their basin probabilities."""
    basins, grid = landscape.basins, landscape.grid
    in_right = samples > basins.barrier
    parts, probs = [], []
    per_basin = {}
    for k, mask in enumerate((~in_right, in_right)):
        label = "wide" if k == basins.wide else "sharp"
        prob = float(mask.mean())
        if mask.sum() < 2:
            per_basin[label] = {"probability": prob}
            continue
        theta_k = samples[mask]
        d = decompose_test_loss(
            train_min=float(basins.minimizers[k]),
            test_min=float(test.minimizers[k]),
            test_hessian=float(test.hessians[k]),
            mean=float(theta_k.mean()),
            cov=float(theta_k.var()),
            train_depth=float(landscape.depths[k]),
            test_depth=float(test.depths[k]),
        )
        measured = float(on_grid(test.loss_on_grid, grid, theta_k).mean())
        per_basin[label] = {"probability": prob, **_decomp_dict(d), "measured_test_loss": measured}
        parts.append(d)
        probs.append(prob)
    return {
        **_mixed(per_basin, parts, probs),
        "measured_test_loss": float(on_grid(test.loss_on_grid, grid, samples).mean()),
    }


def _decomposition_of_law(
    stat: Stationary1D, landscape: NoiseModelLandscape, test: TestSet
) -> dict[str, Any]:
    """The same decomposition for the exact stationary law (basin masses, means, variances)."""
    basins = landscape.basins
    parts, probs = [], []
    per_basin = {}
    for k, (lo, hi) in enumerate(((-math.inf, basins.barrier), (basins.barrier, math.inf))):
        label = "wide" if k == basins.wide else "sharp"
        prob = float(basin_probability(stat, lo, hi))
        if prob <= 1e-12:  # no mass: no conditional moments
            per_basin[label] = {"probability": prob}
            continue
        mean, var = mean_and_var(stat, lo, hi)
        d = decompose_test_loss(
            train_min=float(basins.minimizers[k]),
            test_min=float(test.minimizers[k]),
            test_hessian=float(test.hessians[k]),
            mean=mean,
            cov=var,
            train_depth=float(landscape.depths[k]),
            test_depth=float(test.depths[k]),
        )
        per_basin[label] = {"probability": prob, **_decomp_dict(d)}
        parts.append(d)
        probs.append(prob)
    return _mixed(per_basin, parts, probs)


def run_cell(
    config: TwoMinimaConfig, landscape: NoiseModelLandscape, plan: CellPlan
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Run one planned cell (SGD and SDE only when the plan fits the budget).

    Returns:
        The cell's ``summary.json`` entry and its arrays for ``data.npz``.
    """
    basins, grid = landscape.basins, landscape.grid
    stat = stationary_density_1d(grid, landscape.grad, landscape.noise, plan.t_effective)
    gibbs = gibbs_density_1d(grid, landscape.loss, plan.temperature, landscape.gibbs_noise)
    p_fp, p_gibbs = _p_wide(stat, basins), _p_wide(gibbs, basins)
    arrays = {
        f"{plan.key}_fp_density": stat.density,
        f"{plan.key}_effective_potential": stat.effective_potential,
        # one Gibbs law per temperature (both batch sizes write the same array)
        f"{plan.noise}_T{plan.t_index}_gibbs_density": gibbs.density,
    }
    cell: dict[str, Any] = {
        "noise": plan.noise,
        "T": plan.temperature,
        "T_from_lr_and_batch": temperature(plan.lr, plan.batch_size),
        "T_effective": plan.t_effective,
        "lr": plan.lr,
        "batch_size": plan.batch_size,
        "lr_sharpness": plan.lr_sharpness,
        "replacement": config.replacement,
        "simulated": plan.feasible,
        "equilibration": plan.summary(),
        "p_wide_fp": p_fp,
        "p_wide_gibbs": p_gibbs,
        "train_loss_fp": float(np.trapezoid(stat.density * landscape.loss, grid)),
        "test_loss_fp": {
            k: float(np.trapezoid(stat.density * v.loss_on_grid, grid))
            for k, v in landscape.tests.items()
        },
        "decomposition_fp": {
            k: _decomposition_of_law(stat, landscape, v) for k, v in landscape.tests.items()
        },
    }
    if plan.steps is None:  # said up front: not simulated
        empty = {"p_wide_sgd": None, "p_wide_sde": None, "equilibrated": False}
        cell.update(empty, sgd=None, sde=None, sampling_comparison=None)
        cell.update(train_loss=None, test_loss=None)
        cell.update(decomposition=None, agreement=_agreement(cell, None, None))
        return cell, arrays
    half = config.n_chains // 2
    starts_wide = np.arange(config.n_chains) < half
    theta0 = np.where(
        starts_wide, basins.minimizers[basins.wide], basins.minimizers[1 - basins.wide]
    )
    theta0_t = torch.as_tensor(theta0, dtype=torch.float64).reshape(-1, 1)
    sgd = _run_sgd(landscape, plan, theta0_t, plan.steps, config.replacement, plan.seed)
    sde = run_sde(
        landscape.table,
        theta0_t,
        temperature=plan.t_effective,
        dt=plan.lr,
        n_steps=plan.steps,
        record_every=plan.record_every,
        generator=torch.Generator().manual_seed(plan.seed + 1),
    )
    frac_sgd, samples = _wide_fraction(sgd, basins, config.burn_in)
    frac_sde, samples_sde = _wide_fraction(sde, basins, config.burn_in)
    stats_sgd = _sim_stats(frac_sgd, starts_wide, config.equilibration_tol)
    stats_sde = _sim_stats(frac_sde, starts_wide, config.equilibration_tol)
    edges = np.linspace(grid[0], grid[-1], HIST_BINS + 1)
    arrays[f"{plan.key}_sgd_hist"] = np.histogram(samples, bins=edges, density=True)[0]
    arrays[f"{plan.key}_sde_hist"] = np.histogram(samples_sde, bins=edges, density=True)[0]
    tests = landscape.tests
    cell.update(
        {
            "p_wide_sgd": stats_sgd["p_wide"],
            "p_wide_sde": stats_sde["p_wide"],
            "equilibrated": stats_sgd["equilibrated"],
            "sgd": stats_sgd,
            "sde": stats_sde,
            "train_loss": float(on_grid(landscape.loss, grid, samples).mean()),
            "test_loss": {
                k: float(on_grid(v.loss_on_grid, grid, samples).mean()) for k, v in tests.items()
            },
            "decomposition": {k: _decomposition(samples, landscape, v) for k, v in tests.items()},
        }
    )
    cell["agreement"] = _agreement(cell, stats_sgd, stats_sde)
    cell["sampling_comparison"] = None
    if config.compare_sampling and plan.lr_sharpness <= COMPARABLE_LR_SHARPNESS:
        cell["sampling_comparison"] = _other_sampling(
            config, landscape, plan, plan.steps, (theta0_t, starts_wide)
        )
    return cell, arrays


def _run_sgd(
    landscape: NoiseModelLandscape,
    plan: CellPlan,
    theta0: torch.Tensor,
    steps: int,
    replacement: bool,
    seed: int,
) -> Trajectory:
    return run_sgd(
        landscape.train,
        theta0,
        lr=plan.lr,
        batch_size=plan.batch_size,
        n_steps=steps,
        record_every=plan.record_every,
        replacement=replacement,
        generator=torch.Generator().manual_seed(seed),
    )


def _other_sampling(
    config: TwoMinimaConfig,
    landscape: NoiseModelLandscape,
    plan: CellPlan,
    steps: int,
    starts: tuple[torch.Tensor, np.ndarray],
) -> dict[str, Any]:
    """SGD with the other sampling scheme, same cell, steps and starts: shown, not judged.

    Beside it, the Fokker-Planck law at that scheme's marginal noise (with the without-replacement
    factor when reshuffled), so that a gap the factor does not explain shows as such.
    """
    other = not config.replacement
    theta0, starts_wide = starts
    sgd = _run_sgd(landscape, plan, theta0, steps, other, plan.seed + 2)
    frac, _ = _wide_fraction(sgd, landscape.basins, config.burn_in)
    stats = _sim_stats(frac, starts_wide, config.equilibration_tol)
    t_other = sampling_temperature(
        plan.temperature, config.n_train, plan.batch_size, replacement=other
    )
    law = stationary_density_1d(landscape.grid, landscape.grad, landscape.noise, t_other)
    p_fp = _p_wide(law, landscape.basins)
    return {
        "replacement": other,
        "sampling": sampling_label(other),
        "T_effective": t_other,
        "p_wide_fp": p_fp,
        "sgd": stats,
        "sgd_vs_fp": abs(stats["p_wide"] - p_fp),
    }


def _agreement(
    cell: dict[str, Any], sgd: dict[str, Any] | None, sde: dict[str, Any] | None
) -> dict[str, Any]:
    """SGD and the SDE against Fokker–Planck, judged only where both equilibrated and stable."""
    if sgd is None or sde is None:
        return {"comparable": False, "sgd_vs_fp": None, "sde_vs_fp": None}
    comparable = (
        sgd["equilibrated"]
        and sde["equilibrated"]
        and cell["lr_sharpness"] <= COMPARABLE_LR_SHARPNESS
    )
    sgd_vs_fp = abs(sgd["p_wide"] - cell["p_wide_fp"])
    sde_vs_fp = abs(sde["p_wide"] - cell["p_wide_fp"])
    # How much closer SGD sits to Fokker-Planck than to the Gibbs law in L, and its error bar.
    margin = abs(sgd["p_wide"] - cell["p_wide_gibbs"]) - sgd_vs_fp
    return {
        "comparable": bool(comparable),
        "sgd_vs_fp": sgd_vs_fp,
        "sde_vs_fp": sde_vs_fp,
        "sgd_vs_fp_ok": bool(sgd_vs_fp <= SGD_TOL) if comparable else None,
        "sde_vs_fp_ok": bool(sde_vs_fp <= SDE_TOL) if comparable else None,
        "fp_over_gibbs_margin": margin,
    }
