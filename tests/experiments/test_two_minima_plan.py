"""Equilibration planned from the predicted relaxation time; SGD confirming the translation law."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from sgdtemp.experiments.two_minima import (
    NoiseModelConfig,
    TwoMinimaConfig,
    plan_two_minima,
    run_two_minima,
)
from sgdtemp.experiments.two_minima.plan import MAX_RECORDS
from sgdtemp.simulate import run_sde
from sgdtemp.theory import (
    basin_probability,
    relaxation_time_1d,
    stationary_density_1d,
    without_replacement_factor,
)

# The default translation model at T = 0.06 (lr * lambda_max = 0.26 at B = 1): the Fokker-Planck
# law puts about 0.91 of the mass in the wide basin, the Gibbs law in L about 0.61.
TRANSLATION = dataclasses.replace(
    TwoMinimaConfig(),
    noise_models={"translation": NoiseModelConfig(0.4, 1.75, (0.06,))},
    n_chains=256,
    n_steps=30_000,
    grid_points=1001,
)


@pytest.fixture(scope="module")
def plan():
    return plan_two_minima(TRANSLATION)


@pytest.mark.parametrize("replacement", [True, False])
def test_plan_follows_the_predicted_relaxation_time(replacement):
    """Steps are relaxation_multiple predicted relaxation times (theory's MFPT quadrature at the
    temperature of the configured sampling: T with replacement, T (N-B)/(N-1) reshuffled, in
    steps of lr), at least min_steps, in whole records, within the budget; a cell that needs more
    is not simulated."""
    config = dataclasses.replace(
        TwoMinimaConfig(),
        noise_models={"isotropic": NoiseModelConfig(0.02, 8.0, (0.003, 0.01, 0.04))},
        n_train=512,
        grid_points=801,
        n_steps=50_000,
        min_steps=500,
        record_every=5,
        replacement=replacement,
    )
    plan = plan_two_minima(config)
    land = plan.landscapes["isotropic"]
    minima = tuple(land.basins.minimizers.tolist())
    assert [c.batch_size for c in plan.cells] == [3, 6, 1, 2, 1, 2]
    for cell in plan.cells:
        factor = 1.0 if replacement else without_replacement_factor(512, cell.batch_size)
        t_eff = cell.temperature * factor
        assert cell.t_effective == pytest.approx(t_eff, rel=1e-15)
        if not replacement and cell.batch_size > 1:
            assert cell.t_effective < cell.temperature
        relax = relaxation_time_1d(land.grid, land.grad, land.noise, t_eff, minima)
        assert cell.relaxation_steps == pytest.approx(relax / cell.lr, rel=1e-12)
        needed = max(500, math.ceil(10 * cell.relaxation_steps))
        if needed > 50_000:
            assert cell.steps is None and not cell.feasible
            continue
        assert cell.steps % cell.record_every == 0
        assert needed <= cell.steps < needed + cell.record_every
        assert cell.steps // cell.record_every <= MAX_RECORDS
    assert [c.feasible for c in plan.cells] == [False, False, True, True, True, True]
    assert plan.cells[-1].steps == 500  # fast relaxation: min_steps


def test_predicted_relaxation_time_matches_the_sde(plan):
    """SDE chains all started in the sharp basin: after one predicted relaxation time the wide
    basin holds 1 - 1/e of its stationary share (two-state relaxation), within 0.06."""
    cell = plan.cells[0]
    land = plan.landscapes["translation"]
    sharp = float(land.basins.minimizers[1 - land.basins.wide])
    theta0 = torch.full((2048, 1), sharp, dtype=torch.float64)
    steps = round(cell.relaxation_steps)
    traj = run_sde(
        land.table,
        theta0,
        temperature=cell.t_effective,
        dt=cell.lr,
        n_steps=steps,
        record_every=steps,
        generator=torch.Generator().manual_seed(0),
    )
    in_wide = land.basins.wide_mask(traj.thetas[-1, :, 0].numpy()).mean()
    law = stationary_density_1d(land.grid, land.grad, land.noise, cell.t_effective)
    p_fp = basin_probability(law, land.basins.barrier, math.inf)  # the wide basin is the right one
    assert land.basins.wide == 1
    assert in_wide == pytest.approx(p_fp * (1.0 - math.exp(-1.0)), abs=0.06)


@pytest.mark.slow
def test_sgd_confirms_the_effective_potential_law(plan):
    """The translation model's central claim, witnessed by SGD itself: planned cells
    equilibrate, SGD lands within 0.05 of Fokker-Planck and far from the Gibbs law in L."""
    result = run_two_minima(TRANSLATION, plan=plan)
    cells = result.summary["cells"]
    assert [c["batch_size"] for c in cells] == [1, 2]
    for c in cells:
        assert c["simulated"] and c["equilibrated"]
        assert abs(c["p_wide_sgd"] - c["p_wide_fp"]) <= 0.05
        assert abs(c["p_wide_fp"] - c["p_wide_gibbs"]) > 0.2
        margin = abs(c["p_wide_sgd"] - c["p_wide_gibbs"]) - abs(c["p_wide_sgd"] - c["p_wide_fp"])
        assert margin > 2.0 * c["sgd"]["stderr"]
    comparable = cells[0]
    assert comparable["lr_sharpness"] <= 0.3 and comparable["agreement"]["comparable"]
    assert abs(comparable["p_wide_sde"] - comparable["p_wide_fp"]) <= 0.03
    witness = [c for c in result.summary["checks"] if c["claim"].startswith("translation: SGD")]
    assert [c["holds"] for c in witness] == [True]
    run_steps = comparable["equilibration"]["relaxation_times_run"]
    assert run_steps == pytest.approx(10.0, rel=0.01)
    assert np.isfinite(comparable["equilibration"]["predicted_relaxation_steps"])
