"""Mean first-passage times against closed forms and the ODE; Kramers' rate against the MFPT."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.linalg import eigh_tridiagonal

from sgdtemp.errors import UserError
from sgdtemp.theory import (
    kramers_rate_1d,
    log_mean_first_passage_time_1d,
    mean_first_passage_time_1d,
    relaxation_time_1d,
)

# Kramers' formula is first order in T_Gibbs / barrier: within this at barrier / T_Gibbs >= 8.
KRAMERS_RTOL_AT_8 = 0.10


def test_free_diffusion_with_reflecting_wall() -> None:
    """L' = 0, C = c: tau(x) = ((b - a)^2 - (x - a)^2) / (T c); exact under the trapezoid rule."""
    rng = np.random.default_rng(0)
    grid = np.sort(np.concatenate(([-1.0, 2.0], rng.uniform(-1.0, 2.0, 300))))  # non-uniform
    T, c, a, b = 0.3, 0.8, -1.0, 2.0
    for x in (-1.0, -0.37, 0.5, 1.99):
        tau = mean_first_passage_time_1d(grid, np.zeros_like(grid), c, T, x, b)
        assert tau == pytest.approx(((b - a) ** 2 - (x - a) ** 2) / (T * c), rel=1e-11)


@pytest.mark.parametrize("force", [-2.0, 0.5, 3.0])
def test_constant_force_closed_form(force: float) -> None:
    """L' = F, drift v = -F, D = T c / 2, wall at a, target b:
    tau(x) = (b - x)/v - (D/v^2) (exp(-v (x - a)/D) - exp(-v (b - a)/D))."""
    T, c, a, b, x = 0.4, 1.5, 0.0, 1.0, 0.3
    D, v = 0.5 * T * c, -force
    exact = (b - x) / v - (D / v**2) * (math.exp(-v * (x - a) / D) - math.exp(-v * (b - a) / D))
    grid = np.linspace(a, b, 4001)
    tau = mean_first_passage_time_1d(grid, np.full_like(grid, force), c, T, x, b)
    # two nested trapezoid rules, relative error about (h v / D)^2 / 6 <= 1e-6 at h = 2.5e-4
    assert tau == pytest.approx(exact, rel=3e-6)


def test_state_dependent_noise_solves_the_backward_equation() -> None:
    """tau solves -L' tau' + (T C / 2) tau'' = -1 with tau'(wall) = 0 and tau(target) = 0."""
    T, a, b = 0.5, -2.0, 1.0
    grid = np.linspace(a, b, 6001)
    dL = grid**3 - grid
    C = 0.5 + 0.3 * np.sin(grid) ** 2 + 0.2 * grid**2
    xs = np.linspace(-1.5, 0.5, 9)
    h = 1e-2
    tau = {
        x: mean_first_passage_time_1d(grid, dL, C, T, x, b)
        for x in np.concatenate((xs, xs - h, xs + h))
    }
    for x in xs:
        d1 = (tau[x + h] - tau[x - h]) / (2 * h)
        d2 = (tau[x + h] - 2 * tau[x] + tau[x - h]) / h**2
        c_x = 0.5 + 0.3 * math.sin(x) ** 2 + 0.2 * x**2
        residual = -(x**3 - x) * d1 + 0.5 * T * c_x * d2 + 1.0
        assert abs(residual) < 1e-3, (x, residual)
    assert mean_first_passage_time_1d(grid, dL, C, T, b, b) == 0.0
    wall = [mean_first_passage_time_1d(grid, dL, C, T, a + k * h, b) for k in (0, 1)]
    assert abs(wall[1] - wall[0]) / h < 1e-3 * wall[0]  # tau'(a) = 0


def test_leftward_passage_mirrors_rightward() -> None:
    T = 0.3
    grid = np.linspace(-2.0, 2.5, 3001)
    dL = grid**3 - grid + 0.2
    C = 1.0 + 0.1 * grid
    left = mean_first_passage_time_1d(grid, dL, C, T, 1.0, -1.0)
    mirrored = mean_first_passage_time_1d(-grid[::-1], -dL[::-1], C[::-1], T, -1.0, 1.0)
    assert left == pytest.approx(mirrored, rel=1e-12)


def test_kramers_rate_matches_mfpt_as_temperature_falls() -> None:
    """Double well L = dL (x^2 - 1)^2: h_min = 8 dL, h_bar = -4 dL; tau(-1 -> +1) * k -> 1."""
    barrier, c = 1.0, 0.7
    grid = np.linspace(-3.0, 1.0, 20001)
    dL = 4.0 * barrier * grid * (grid**2 - 1.0)
    errors = []
    for ratio in (8.0, 16.0, 32.0):  # barrier / T_Gibbs
        T = 2.0 * barrier / (ratio * c)
        tau = mean_first_passage_time_1d(grid, dL, c, T, -1.0, 1.0)
        k = kramers_rate_1d(
            barrier_height=barrier,
            curvature_min=8 * barrier,
            curvature_barrier=-4 * barrier,
            noise_var=c,
            temperature=T,
        )
        errors.append(abs(k * tau - 1.0))
    assert errors[0] < KRAMERS_RTOL_AT_8, errors
    ratios = np.array(errors[1:]) / np.array(errors[:-1])
    assert np.all((ratios > 0.35) & (ratios < 0.65)), errors  # first order in T_Gibbs / barrier


def test_low_temperature_log_time_is_finite() -> None:
    grid = np.linspace(-2.0, 1.0, 20001)
    dL = 4.0 * grid * (grid**2 - 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        log_tau = log_mean_first_passage_time_1d(grid, dL, 1.0, 1e-4, -1.0, 1.0)
        tau = mean_first_passage_time_1d(grid, dL, 1.0, 1e-4, -1.0, 1.0)
        rate = kramers_rate_1d(
            barrier_height=1.0,
            curvature_min=8.0,
            curvature_barrier=-4.0,
            noise_var=1.0,
            temperature=1e-4,
        )
    assert tau == math.inf and rate == 0.0
    # Arrhenius: log tau ~ barrier / T_Gibbs = 2e4, plus the log prefactor
    assert log_tau == pytest.approx(2e4 + math.log(2 * math.pi / math.sqrt(32.0)), rel=1e-6)


def _spectral_gap(grid: np.ndarray, dL: np.ndarray, C: np.ndarray, T: float) -> float:
    r"""First non-zero eigenvalue of a finite-volume Fokker–Planck operator (the oracle).

    The flux is $J = -D\pi\,(p/\pi)'$ with $D = TC/2$ and $\pi \propto C^{-1}e^{-(2/T)\int L'/C}$;
    its discretization $J_{i+1/2} = -a_i(p_{i+1}/\pi_{i+1} - p_i/\pi_i)/h$ with
    $a_i = \bar D_i\sqrt{\pi_i\pi_{i+1}}$ is symmetric in the $\pi$-weighted inner product, so
    its spectrum is that of a symmetric tridiagonal matrix.
    """
    h = float(grid[1] - grid[0])
    ratio = dL / C
    phi = np.concatenate(([0.0], np.cumsum(0.5 * (ratio[1:] + ratio[:-1]) * h)))
    log_pi = -(2.0 / T) * phi - np.log(C)
    pi = np.exp(log_pi - log_pi.max())
    d_mid = 0.25 * T * (C[1:] + C[:-1])
    a = d_mid * np.sqrt(pi[1:] * pi[:-1]) / h
    diag = np.zeros_like(grid)
    diag[:-1] += a
    diag[1:] += a
    mass = pi * h
    off = -a / np.sqrt(mass[1:] * mass[:-1])
    eig = eigh_tridiagonal(diag / mass, off, select="i", select_range=(0, 1), eigvals_only=True)
    return float(eig[1])


def test_relaxation_time_matches_the_spectral_gap() -> None:
    """A tilted double well with state-dependent noise: 1/relaxation time = the spectral gap to
    0.6 % when the barrier is high (T = 0.05), and the estimate stays on the slow side as the
    barrier falls (it counts the descent into each well)."""
    grid = np.linspace(-2.5, 2.5, 1001)
    dL = grid**3 - grid + 0.1
    C = 1.0 + 0.5 * grid**2
    minima = tuple(float(r.real) for r in np.roots([1.0, 0.0, -1.0, 0.1]) if abs(r.real) > 0.5)
    for T, rtol in ((0.05, 0.006), (0.1, 0.07), (0.2, 0.2)):
        rate = 1.0 / relaxation_time_1d(grid, dL, C, T, minima)
        gap = _spectral_gap(grid, dL, C, T)
        assert rate <= gap
        assert rate == pytest.approx(gap, rel=rtol), T


def test_relaxation_time_overflows_to_inf_and_needs_two_minima() -> None:
    grid = np.linspace(-2.0, 2.0, 4001)
    dL = 4.0 * grid * (grid**2 - 1.0)
    assert relaxation_time_1d(grid, dL, 1.0, 1e-3, (-1.0, 1.0)) == math.inf
    with pytest.raises(UserError, match="distinct"):
        relaxation_time_1d(grid, dL, 1.0, 0.1, (1.0, 1.0))


def test_bad_input_raises() -> None:
    grid = np.linspace(0.0, 1.0, 11)
    with pytest.raises(UserError, match="start must lie inside"):
        mean_first_passage_time_1d(grid, 0.0, 1.0, 0.1, -0.5, 1.0)
    with pytest.raises(UserError, match="target must lie inside"):
        mean_first_passage_time_1d(grid, 0.0, 1.0, 0.1, 0.5, 1.5)
    with pytest.raises(UserError, match="C"):
        mean_first_passage_time_1d(grid, 0.0, 0.0, 0.1, 0.0, 1.0)
    with pytest.raises(UserError, match="barrier_height"):
        kramers_rate_1d(
            barrier_height=-1.0,
            curvature_min=1.0,
            curvature_barrier=-1.0,
            noise_var=1.0,
            temperature=0.1,
        )
    with pytest.raises(UserError, match="curvature_barrier"):
        kramers_rate_1d(
            barrier_height=1.0,
            curvature_min=1.0,
            curvature_barrier=0.0,
            noise_var=1.0,
            temperature=0.1,
        )
    with pytest.raises(UserError, match="curvature_min"):
        kramers_rate_1d(
            barrier_height=1.0,
            curvature_min=-1.0,
            curvature_barrier=-1.0,
            noise_var=1.0,
            temperature=0.1,
        )
