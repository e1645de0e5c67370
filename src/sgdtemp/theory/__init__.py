"""Closed forms and deterministic solvers of the SGD / SDE / Fokker–Planck picture (pure math)."""

from __future__ import annotations

from sgdtemp.theory.decomposition import (
    ShiftDecomposition,
    decompose_test_loss,
    mix_decompositions,
)
from sgdtemp.theory.kramers import (
    kramers_rate_1d,
    log_mean_first_passage_time_1d,
    mean_first_passage_time_1d,
)
from sgdtemp.theory.laplace import (
    crossover_temperature,
    laplace_basin_weights,
    laplace_log_weights,
)
from sgdtemp.theory.lyapunov import lyapunov_continuous, lyapunov_discrete, stationary_bias
from sgdtemp.theory.stationary_1d import (
    Stationary1D,
    basin_probability,
    gibbs_density_1d,
    mean_and_var,
    stationary_density_1d,
)
from sgdtemp.theory.temperature import lr_for_temperature, temperature, without_replacement_factor

__all__ = [
    # temperature
    "temperature",
    "lr_for_temperature",
    "without_replacement_factor",
    # 1-D stationary law (Fokker–Planck, exact)
    "Stationary1D",
    "stationary_density_1d",
    "gibbs_density_1d",
    "basin_probability",
    "mean_and_var",
    # Laplace basin weights (isotropic constant noise)
    "laplace_basin_weights",
    "laplace_log_weights",
    "crossover_temperature",
    # local Gaussian: Lyapunov covariance and stationary bias
    "lyapunov_continuous",
    "lyapunov_discrete",
    "stationary_bias",
    # test-loss decomposition under shift
    "ShiftDecomposition",
    "decompose_test_loss",
    "mix_decompositions",
    # escape times
    "kramers_rate_1d",
    "mean_first_passage_time_1d",
    "log_mean_first_passage_time_1d",
]
