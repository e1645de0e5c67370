"""Exact 1-D stationary density against closed forms and scipy quadrature."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import integrate, optimize, stats

from sgdtemp.errors import UserError
from sgdtemp.landscapes import MixturePotential, TwoMinimaLoss, sample_two_minima_data
from sgdtemp.theory import (
    basin_probability,
    gibbs_density_1d,
    mean_and_var,
    stationary_density_1d,
)

# Agreement with a closed form when the trapezoid rule is exact (piecewise-linear L').
RTOL_EXACT = 1e-10
# Grid step 1e-3 with a smooth, state-dependent C: trapezoid error ~ h^2 (2/T) max|f''| / 12.
RTOL_QUAD = 1e-5
# Observed convergence order of the max density error (theory: 2).
ORDER_BAND = (1.8, 2.2)


def two_quadratics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """min(8 (x+1)^2 / 2, 0.05 + (x-1.5)^2 / 2): L and L' (deep sharp left, wide right)."""
    left = 4.0 * (x + 1.0) ** 2
    right = 0.05 + 0.5 * (x - 1.5) ** 2
    use_left = left <= right
    return np.where(use_left, left, right), np.where(use_left, 8.0 * (x + 1.0), x - 1.5)


def kink() -> float:
    """The point where the two quadratics meet (between the minima)."""
    return optimize.brentq(lambda x: 4.0 * (x + 1.0) ** 2 - 0.05 - 0.5 * (x - 1.5) ** 2, -1.0, 1.5)


# A C^1 double well whose L' is continuous and piecewise linear: sharp minimum (h = 8) at -1,
# barrier on [-0.8, 0], wide minimum (h = 1) at 1. The trapezoid rule integrates L' exactly when
# the knots lie on the grid, so the stationary law must equal the closed-form Gibbs law.
KNOTS = np.array([-3.0, -0.8, 0.0, 5.0])
SLOPES = np.array([-16.0, 1.6, -1.0, 4.0])  # L' at the knots


def piecewise_loss(x: np.ndarray) -> np.ndarray:
    """Closed-form antiderivative of the piecewise-linear L' (zero at x = -3)."""
    seg_integrals = np.diff(KNOTS) * (SLOPES[:-1] + SLOPES[1:]) / 2
    at_knots = np.concatenate(([0.0], np.cumsum(seg_integrals)))
    i = np.clip(np.searchsorted(KNOTS, x, side="right") - 1, 0, len(KNOTS) - 2)
    slope_x = np.interp(x, KNOTS, SLOPES)
    L = at_knots[i] + (x - KNOTS[i]) * (SLOPES[i] + slope_x) / 2
    return L


def test_constant_noise_equals_gibbs_law() -> None:
    grid = np.unique(np.concatenate((np.linspace(-3.0, 5.0, 4001), KNOTS)))
    dL = np.interp(grid, KNOTS, SLOPES)
    L = piecewise_loss(grid)
    sigma2, T = 0.5, 0.2
    stat = stationary_density_1d(grid, dL, sigma2, T)
    # oracle: the closed-form Gibbs law, normalized by the trapezoid rule
    q = np.exp(-2.0 * (L - L.min()) / (T * sigma2))
    q /= np.trapezoid(q, grid)
    np.testing.assert_allclose(stat.density, q, rtol=RTOL_EXACT, atol=0)
    gibbs = gibbs_density_1d(grid, L, T, sigma2)
    np.testing.assert_allclose(gibbs.density, q, rtol=RTOL_EXACT, atol=0)
    np.testing.assert_allclose(stat.effective_potential * sigma2, L - L.min(), atol=1e-12)
    np.testing.assert_allclose(gibbs.effective_potential, L - L.min(), atol=0)
    # constant C: the free energy is the effective potential
    np.testing.assert_allclose(stat.free_energy, stat.effective_potential, atol=1e-12)


@pytest.mark.parametrize(
    "h,m,c,T", [(1.0, 0.0, 1.0, 0.02), (4.0, 0.3, 0.25, 0.5), (0.5, -1.0, 2.0, 1e-3)]
)
def test_quadratic_loss_gives_gaussian(h: float, m: float, c: float, T: float) -> None:
    std = math.sqrt(T * c / (2.0 * h))
    grid = np.linspace(m - 12 * std, m + 12 * std, 3001)
    stat = stationary_density_1d(grid, h * (grid - m), c, T)
    exact = stats.norm.pdf(grid, loc=m, scale=std)
    np.testing.assert_allclose(stat.density, exact, rtol=0, atol=RTOL_EXACT * exact.max())
    mean, var = mean_and_var(stat)
    assert mean == pytest.approx(m, abs=1e-10 * std)
    assert var == pytest.approx(std**2, rel=1e-8)


def test_theory_notes_section_2_8_cubic() -> None:
    """theory.md §2.8: L = x^2/2 + 0.3 x^3/3, C = 1, T = 0.02: mean -0.00301, var 0.01004."""
    T = 0.02
    grid = np.linspace(-1.5, 1.5, 6001)
    stat = stationary_density_1d(grid, grid + 0.3 * grid**2, 1.0, T)
    mean, var = mean_and_var(stat)

    def unnorm(x: float) -> float:
        return math.exp(-(2.0 / T) * (x**2 / 2 + 0.1 * x**3))

    z = integrate.quad(unnorm, -1.5, 1.5, points=[0.0], epsabs=0, epsrel=1e-11)[0]
    m1 = integrate.quad(lambda x: x * unnorm(x), -1.5, 1.5, points=[0.0], epsabs=0, epsrel=1e-11)
    q_mean = m1[0] / z
    q_var = (
        integrate.quad(
            lambda x: (x - q_mean) ** 2 * unnorm(x), -1.5, 1.5, points=[0.0], epsabs=0, epsrel=1e-11
        )[0]
        / z
    )
    assert mean == pytest.approx(q_mean, rel=1e-4)
    assert var == pytest.approx(q_var, rel=1e-5)
    # the figures quoted in the notes (3 significant digits)
    assert round(mean, 5) == -0.00301
    assert round(var, 5) == 0.01004


def noise(x: np.ndarray | float) -> np.ndarray | float:
    return 0.5 + 0.3 * np.sin(x) ** 2 + 0.2 * x**2


def test_state_dependent_noise_against_quad() -> None:
    T, lo, hi = 0.3, -2.5, 2.5
    grid = np.linspace(lo, hi, 5001)
    stat = stationary_density_1d(grid, grid**3 - grid, noise(grid), T)

    def phi(x: float) -> float:
        return integrate.quad(lambda u: (u**3 - u) / noise(u), lo, x, epsabs=1e-12, epsrel=1e-10)[0]

    def unnorm(x: float) -> float:
        return math.exp(-(2.0 / T) * phi(x)) / noise(x)

    z = integrate.quad(unnorm, lo, hi, points=[-1.0, 0.0, 1.0], epsabs=0, epsrel=1e-10)[0]
    for x in (-1.7, -0.3, 0.0, 0.9, 2.2):
        i = int(np.argmin(np.abs(grid - x)))
        assert grid[i] == pytest.approx(x, abs=1e-12)
        assert stat.density[i] == pytest.approx(unnorm(grid[i]) / z, rel=RTOL_QUAD)


def test_grid_convergence_is_second_order() -> None:
    """L' = x^3 - x, C = 1 + x^2/2: Phi = x^2 - 3 log(2 + x^2) in closed form."""
    T, lo, hi = 0.5, -3.0, 3.0

    def unnorm(x: np.ndarray | float) -> np.ndarray | float:
        return np.exp(-(2.0 / T) * (x**2 - 3.0 * np.log(2.0 + x**2))) / (1.0 + x**2 / 2)

    z = integrate.quad(unnorm, lo, hi, epsabs=0, epsrel=1e-11)[0]
    errors = []
    for n in (51, 101, 201, 401):
        grid = np.linspace(lo, hi, n)
        stat = stationary_density_1d(grid, grid**3 - grid, 1.0 + grid**2 / 2, T)
        exact = unnorm(grid) / z
        errors.append(np.max(np.abs(stat.density - exact)) / exact.max())
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all((orders > ORDER_BAND[0]) & (orders < ORDER_BAND[1])), orders


def test_low_temperature_does_not_overflow() -> None:
    grid = np.linspace(-3.0, 5.0, 20001)
    L, dL = two_quadratics(grid)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stat = stationary_density_1d(grid, dL, 0.7, 1e-4)
        gibbs = gibbs_density_1d(grid, L, 1e-4, 0.7)
    for s in (stat, gibbs):
        assert np.all(np.isfinite(s.log_density))
        assert np.trapezoid(s.density, grid) == pytest.approx(1.0, rel=1e-12)
        # all mass in the deep (left) basin, around x = -1
        assert basin_probability(s, -np.inf, kink()) == pytest.approx(1.0, rel=1e-12)
        # a Gaussian peak of std sqrt(T sigma^2 / (2 h)) ~ 2e-3, resolved and finite
        peak = -0.5 * math.log(2 * math.pi * 1e-4 * 0.7 / 16.0)
        assert np.max(s.log_density) == pytest.approx(peak, rel=1e-3)


def test_basin_probability_and_conditional_moments() -> None:
    T = 0.3
    grid = np.linspace(-2.5, 2.5, 4001)
    stat = stationary_density_1d(grid, grid**3 - grid, 1.0, T)
    # masses of adjacent intervals (edges between grid points) add up to 1
    cut = 0.12345
    left = basin_probability(stat, -np.inf, cut)
    right = stat.basin_probability(cut, np.inf)
    assert left + right == pytest.approx(1.0, abs=1e-14)
    assert basin_probability(stat, 0.3, 0.3) == 0.0

    # oracle: Gibbs law exp(-2 L / T) with L = x^4/4 - x^2/2, by quad
    def unnorm(x: float) -> float:
        return math.exp(-(2.0 / T) * (x**4 / 4 - x**2 / 2))

    z = integrate.quad(unnorm, -2.5, 2.5, epsabs=0, epsrel=1e-12)[0]
    p_left = integrate.quad(unnorm, -2.5, cut, epsabs=0, epsrel=1e-12)[0] / z
    assert left == pytest.approx(p_left, rel=1e-5)
    zr = integrate.quad(unnorm, 0.0, 2.5, epsabs=0, epsrel=1e-12)[0]
    m_r = integrate.quad(lambda x: x * unnorm(x), 0.0, 2.5, epsabs=0, epsrel=1e-12)[0] / zr
    v_r = integrate.quad(lambda x: (x - m_r) ** 2 * unnorm(x), 0.0, 2.5, epsrel=1e-12)[0] / zr
    mean, var = stat.mean_and_var(0.0, None)
    assert mean == pytest.approx(m_r, rel=1e-5)
    assert var == pytest.approx(v_r, rel=1e-5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"C": np.zeros(5)}, "C"),
        ({"C": -1.0}, "C"),
        ({"grid": np.array([0.0, 2.0, 1.0, 3.0, 4.0])}, "grid"),
        ({"dL": np.zeros(4)}, "dL"),
        ({"dL": np.array([0.0, np.nan, 0, 0, 0])}, "dL"),
        ({"temperature": 0.0}, "temperature"),
    ],
)
def test_bad_input_raises_user_error(kwargs: dict, match: str) -> None:
    args = {"grid": np.linspace(0.0, 1.0, 5), "dL": np.zeros(5), "C": 1.0, "temperature": 0.1}
    args.update(kwargs)
    with pytest.raises(UserError, match=match):
        stationary_density_1d(args["grid"], args["dL"], args["C"], args["temperature"])


def test_bad_interval_raises_user_error() -> None:
    stat = gibbs_density_1d(np.linspace(0.0, 1.0, 5), np.zeros(5), 0.1, 1.0)
    with pytest.raises(UserError, match="lo <= hi"):
        basin_probability(stat, 0.8, 0.2)
    with pytest.raises(UserError, match="no probability mass"):
        mean_and_var(stat, 2.0, 3.0)
    with pytest.raises(UserError, match="noise_var"):
        gibbs_density_1d(np.linspace(0.0, 1.0, 5), np.zeros(5), 0.1, 0.0)


# Grid evaluation of L', L'' and C (the stationary density's inputs) against per-example
# gradients summed in float64: agreement to this (rounding only).
GRID_RTOL, GRID_ATOL = 1e-11, 1e-11


@pytest.mark.parametrize("translation_std", [0.02, 0.4])
def test_two_minima_grid_evaluation_matches_per_example_oracle(translation_std: float) -> None:
    """The uniform-grid path (factored exponentials) and the direct path (shuffled points)."""
    gen = torch.Generator().manual_seed(0)
    x, xi = sample_two_minima_data(
        300, translation_std=translation_std, tilt_std=4.0, generator=gen
    )
    loss = TwoMinimaLoss(MixturePotential(), x, xi)
    grid = torch.linspace(-6.0, 8.0, 401, dtype=torch.float64).unsqueeze(1)
    perm = torch.randperm(grid.shape[0], generator=gen)
    grads = loss.all_example_grads(grid)[..., 0]  # (points, N)
    hess = loss.potential.d2(grid - x).mean(dim=1)
    oracle = (grads.mean(dim=1), hess, grads.var(dim=1, correction=0))
    tp = grid[:, 0] - float(x.mean())
    delta0 = loss.potential.log_ratio(tp)
    slope = loss.potential._coef.c1 + 2.0 * loss.potential._coef.c2 * tp
    assert loss._grid._sigmoid_filler(tp, delta0, slope, 8).__name__ == "factored"
    assert loss._grid._sigmoid_filler(tp[perm], delta0[perm], slope[perm], 8).__name__ == "direct"
    for points, order in ((grid, slice(None)), (grid[perm], perm)):
        g, h, c = loss.grad_hessian_noise(points)
        for got, want in zip((g[:, 0], h[:, 0, 0], c[:, 0, 0]), oracle):
            torch.testing.assert_close(got, want[order], rtol=GRID_RTOL, atol=GRID_ATOL)
