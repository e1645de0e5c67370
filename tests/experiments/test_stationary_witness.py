"""Simulation witness of the 2-D Fokker–Planck law under data noise (issue 18's landscape)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sgdtemp.errors import UserError
from sgdtemp.experiments.stationary_witness import (
    N_SE,
    basin_labels,
    sample_law,
    simulation_witness,
)
from sgdtemp.landscapes.double_well_2d import DoubleWell2D, double_well_2d_loss
from sgdtemp.theory.fokker_planck_2d import stationary_2d


def data_double_well():
    """1024 examples, translations 0.2, whitened tilts of spread 1, data seed 0 (issue 18)."""
    gen = torch.Generator().manual_seed(0)
    return double_well_2d_loss(1024, translation_scale=0.2, generator=gen)


def test_reflected_sde_keeps_the_grid_law_at_t_half() -> None:
    w = simulation_witness(data_double_well(), 0.5, grid=80, chains=3000, duration=5.0, seed=1)
    print(w)
    assert w.agrees and w.reflection == "conormal"
    assert w.stderr[0] < 0.015 and w.mean_steps > 1000
    assert sum(w.simulated) == pytest.approx(1.0) and sum(w.occupation) == pytest.approx(1.0)


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [0.3, 0.5])
def test_each_wall_condition_has_its_simulation(temperature: float) -> None:
    """No-flux grid walls = conormal reflection; projecting walls = normal reflection.

    The second pairing is issue 18's report: a normally reflected simulation (0.709-0.711 and
    0.669) against the no-flux solver (0.677, 0.644). Both are right, for different walls.
    """
    land = data_double_well()
    law = stationary_2d(land, temperature, grid=100)
    duration = {0.3: 16.0, 0.5: 8.0}[temperature]
    conormal = simulation_witness(land, temperature, law=law, chains=6000, duration=duration)
    normal = simulation_witness(
        land, temperature, law=law, chains=6000, duration=duration, reflection="normal", seed=1
    )
    print(conormal, normal, sep="\n")
    assert conormal.agrees
    assert abs(normal.simulated[0] - normal.solver_projected[0]) <= N_SE * normal.stderr[0]
    if temperature == 0.5:  # at T = 0.3 the gap, 0.028, is about 3 standard errors here
        assert not normal.agrees  # against the no-flux law


def test_sampling_and_labels_follow_the_grid() -> None:
    law = stationary_2d(DoubleWell2D(), 0.3, grid=64)
    points = sample_law(law, np.random.default_rng(0), 20000)
    g = law.grid
    assert points[:, 0].min() >= g.xmin and points[:, 0].max() <= g.xmax
    labels = basin_labels(law, points)
    for k, b in enumerate(law.basins):
        assert np.mean(labels == k) == pytest.approx(b.probability, abs=0.01)


def test_a_single_basin_has_nothing_to_balance() -> None:
    from sgdtemp.landscapes import QuadraticLoss

    xi = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=torch.float64)
    quad = QuadraticLoss(torch.eye(2, dtype=torch.float64), xi)
    with pytest.raises(UserError, match="single basin"):
        simulation_witness(quad, 0.5, grid=32, chains=10, duration=1.0)
