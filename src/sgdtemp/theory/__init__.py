"""Closed forms and deterministic solvers of the SGD / SDE / Fokker–Planck picture (pure math).

The temperature helpers are imported at once (they need nothing but the standard library); every
other name is imported from its module on first access (PEP 562), so ``import sgdtemp`` — which
every sweep worker pays as it starts — loads neither NumPy, SciPy nor torch.
``from sgdtemp.theory import X`` works for every name in ``__all__``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sgdtemp.theory.temperature import lr_for_temperature, temperature, without_replacement_factor

if TYPE_CHECKING:
    from sgdtemp.theory.decomposition import (
        ShiftDecomposition,
        decompose_test_loss,
        mix_decompositions,
    )
    from sgdtemp.theory.escape import (
        DiscreteCovariances,
        EscapeRate,
        MinimumEnergyPath,
        discrete_time_covariances,
        eyring_kramers_rate,
        find_saddle,
        minimum_energy_path,
    )
    from sgdtemp.theory.first_passage import (
        FirstPassage,
        exponential_rate,
        first_passage_times,
        two_state_rates,
    )
    from sgdtemp.theory.fokker_planck_2d import (
        Basin2D,
        FokkerPlanck2D,
        Grid2D,
        Propagation,
        Stationary2D,
        auto_domain,
        effective_potential,
        fokker_planck_from_landscape,
        gibbs_density_2d,
        selling_decomposition,
        shaped_grid,
        stationary_2d,
        steepest_descent_basins,
    )
    from sgdtemp.theory.kramers import (
        kramers_rate_1d,
        log_mean_first_passage_time_1d,
        mean_first_passage_time_1d,
        relaxation_time_1d,
    )
    from sgdtemp.theory.laplace import (
        crossover_temperature,
        laplace_basin_weights,
        laplace_log_weights,
    )
    from sgdtemp.theory.lyapunov import lyapunov_continuous, lyapunov_discrete, stationary_bias
    from sgdtemp.theory.scaling import ScaleAdvice, scale_learning_rate
    from sgdtemp.theory.stability import effective_lr_factor, stability_threshold
    from sgdtemp.theory.stationary_1d import (
        Stationary1D,
        basin_probability,
        gibbs_density_1d,
        mean_and_var,
        stationary_density_1d,
    )

__all__ = [
    # temperature
    "temperature",
    "lr_for_temperature",
    "without_replacement_factor",
    # scaling the learning rate with the batch size
    "ScaleAdvice",
    "scale_learning_rate",
    # linear stability with momentum (edge of stability)
    "stability_threshold",
    "effective_lr_factor",
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
    "relaxation_time_1d",
    # 2-D Fokker–Planck with full, state-dependent diffusion
    "Grid2D",
    "FokkerPlanck2D",
    "Propagation",
    "Basin2D",
    "Stationary2D",
    "stationary_2d",
    "fokker_planck_from_landscape",
    "auto_domain",
    "shaped_grid",
    "selling_decomposition",
    "steepest_descent_basins",
    "effective_potential",
    "gibbs_density_2d",
    # escape times (Eyring–Kramers, first passages) and discrete-time covariances
    "MinimumEnergyPath",
    "minimum_energy_path",
    "find_saddle",
    "EscapeRate",
    "eyring_kramers_rate",
    "two_state_rates",
    "FirstPassage",
    "first_passage_times",
    "exponential_rate",
    "DiscreteCovariances",
    "discrete_time_covariances",
]

#: Module (under ``sgdtemp.theory``) of every lazily imported name.
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        ("ShiftDecomposition", "decompose_test_loss", "mix_decompositions"), "decomposition"
    ),
    **dict.fromkeys(
        (
            "DiscreteCovariances",
            "EscapeRate",
            "MinimumEnergyPath",
            "discrete_time_covariances",
            "eyring_kramers_rate",
            "find_saddle",
            "minimum_energy_path",
        ),
        "escape",
    ),
    **dict.fromkeys(
        ("FirstPassage", "exponential_rate", "first_passage_times", "two_state_rates"),
        "first_passage",
    ),
    **dict.fromkeys(
        (
            "Basin2D",
            "FokkerPlanck2D",
            "Grid2D",
            "Propagation",
            "Stationary2D",
            "auto_domain",
            "effective_potential",
            "fokker_planck_from_landscape",
            "gibbs_density_2d",
            "selling_decomposition",
            "shaped_grid",
            "stationary_2d",
            "steepest_descent_basins",
        ),
        "fokker_planck_2d",
    ),
    **dict.fromkeys(
        (
            "kramers_rate_1d",
            "log_mean_first_passage_time_1d",
            "mean_first_passage_time_1d",
            "relaxation_time_1d",
        ),
        "kramers",
    ),
    **dict.fromkeys(
        ("crossover_temperature", "laplace_basin_weights", "laplace_log_weights"), "laplace"
    ),
    **dict.fromkeys(("lyapunov_continuous", "lyapunov_discrete", "stationary_bias"), "lyapunov"),
    **dict.fromkeys(("ScaleAdvice", "scale_learning_rate"), "scaling"),
    **dict.fromkeys(("effective_lr_factor", "stability_threshold"), "stability"),
    **dict.fromkeys(
        (
            "Stationary1D",
            "basin_probability",
            "gibbs_density_1d",
            "mean_and_var",
            "stationary_density_1d",
        ),
        "stationary_1d",
    ),
}


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first access (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
