"""The sampling regime of the two-minima study: SGD with replacement follows the Fokker-Planck law
where crossings are rare; SGD reshuffled every epoch, shown beside it, does not."""

import dataclasses

import pytest

from sgdtemp.experiments.two_minima import NoiseModelConfig, TwoMinimaConfig, run_two_minima

# Isotropic T = 0.005: the B = 4 cell (lr * lambda_max = 0.15) relaxes in 1.8e4 steps; six of
# them fit the budget, B = 2 (3.6e4 steps per relaxation time) does not and is not simulated.
RARE_CROSSINGS = dataclasses.replace(
    TwoMinimaConfig.quick(),
    noise_models={"isotropic": NoiseModelConfig(0.02, 8.0, (0.005,))},
    n_chains=256,
    n_steps=150_000,
    relaxation_multiple=6.0,
    grid_points=1001,
)


@pytest.mark.slow
def test_reshuffling_departs_from_the_law_sampling_with_replacement_does_not():
    """Both runs equilibrate (chains from either basin agree); SGD with replacement lands within
    0.05 of Fokker-Planck (TM5's tolerance), reshuffled SGD more than three standard errors of
    the difference above it, and the (N-B)/(N-1) factor does not account for the gap."""
    summary = run_two_minima(RARE_CROSSINGS).summary
    simulated = [c for c in summary["cells"] if c["simulated"]]
    assert [c["batch_size"] for c in simulated] == [4]
    (row,) = summary["sampling_comparison"]["cells"]
    assert row["equilibrated_with_replacement"] and row["equilibrated_reshuffled"]
    assert abs(row["p_wide_sgd_with_replacement"] - row["p_wide_fp"]) <= 0.05
    gap = row["reshuffled_minus_with_replacement"]
    assert gap > 3.0 * row["difference_stderr"]
    assert abs(row["p_wide_fp_without_replacement_factor"] - row["p_wide_fp"]) < 0.01 * gap
    verdict = [c for c in summary["checks"] if c["claim"].startswith("each noise model")][0]
    assert "more than 3 standard errors in 1 of them" in verdict["detail"]
