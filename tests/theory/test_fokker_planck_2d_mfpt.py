"""2-D Fokker–Planck linear algebra at high barriers: MFPT, relaxation rates, backward Euler.

The oracle is a separable landscape, ``DoubleWell2D(g=0)``: $L = (x^2-1)^2 + tx + \\tfrac12y^2$
with isotropic noise. Its finite-volume chain moves in ``x`` with rates that depend on ``x``
only, so the ``x``-marginal is *exactly* a 1-D birth–death chain whose mean first-passage
times are sums of positive terms and whose slowest relaxation rate is the root of a
shooting recursion: both are evaluated here independently of the 2-D solver and exact to
round-off. The 1-D quadrature of :func:`mean_first_passage_time_1d` is the continuum oracle.

Barrier over noise $\\Delta U/D$ runs from 3 to 40 ($\\tau$ from ~10 to ~1e17). A plain sparse
LU of these M-matrices (the solver before the pinned, GTH-pivoted elimination) lost relative
accuracy like round-off times $e^{\\Delta U/D}$. On these oracles it gave MFPT errors 1e-10,
5e-7, 6e-4 and 1 at $\\Delta U/D$ = 10, 20, 25 and 40. At 40 the slowest relaxation rate came
out negative, and backward Euler lost all its mass, with densities down to -2.8.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse.linalg
from scipy.optimize import brentq

from sgdtemp.landscapes.double_well_2d import DoubleWell2D
from sgdtemp.theory.fokker_planck_2d import (
    FokkerPlanck2D,
    Grid2D,
    fokker_planck_from_landscape,
)
from sgdtemp.theory.fokker_planck_2d.linalg import _gth_factor, _gth_stationary
from sgdtemp.theory.kramers import mean_first_passage_time_1d

TILT = -0.1  # the right basin is the deeper one
BOX = (-2.2, 2.2, -2.0, 2.0)
NY = 16
# The chain's rates carry the regularizing floor of D (D_FLOOR = 1e-12 relative) times U / D,
# ~1e-10 relative at U / D = 40; observed agreement with the exact chain: <= 8e-11.
CHAIN_RTOL = 1e-9
# Slowest rate: observed <= 3e-10 up to U / D = 30. At U / D = 40 (rate 2e-16 of the largest
# ~300) the shift-invert floor, round-off times the shift 1e-9 max|A_kk|, dominates: 1e-5.
RATE_RTOL = 1e-8
RATE_RTOL_DEEP = 1e-4
# Backward Euler: per-step mass round-off ~1e-14, a hundred steps here.
MASS_ATOL = 1e-11
# Per cell against stationary(), where the density is above 1e-200 of its peak.
CELL_RTOL = 1e-8


def x_potential(x: np.ndarray) -> np.ndarray:
    return (x**2 - 1) ** 2 + TILT * x


def x_slope(x: np.ndarray) -> np.ndarray:
    return 4 * x * (x**2 - 1) + TILT


def barrier_from_right() -> float:
    """U(saddle) - U(right minimum) of the x-potential."""
    crit = np.sort(np.roots([4.0, 0.0, -4.0, TILT]).real)
    return float(x_potential(crit[1]) - x_potential(crit[2]))


def separable(ratio: float, nx: int = 240) -> tuple[FokkerPlanck2D, float]:
    """The operator of DoubleWell2D(g=0) at barrier / D = ratio, and D."""
    d = barrier_from_right() / ratio
    grid = Grid2D(*BOX, nx, NY)
    land = DoubleWell2D(t=TILT, g=0.0, sigma=1.0)
    return fokker_planck_from_landscape(land, 2.0 * d, grid), d


def chain_rates(x: np.ndarray, d: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The x-chain: stationary weights pi ``(n,)`` and rates i -> i+1, i+1 -> i ``(n-1,)``."""
    u = x_potential(x)
    rho = d / (x[1] - x[0]) ** 2

    def bernoulli(z: np.ndarray) -> np.ndarray:  # z / (e^z - 1)
        with np.errstate(over="ignore", invalid="ignore"):
            return np.where(z == 0, 1.0, z / np.expm1(np.where(z == 0, 1.0, z)))

    du = np.diff(u) / d
    return np.exp(-(u - u.min()) / d), rho * bernoulli(du), rho * bernoulli(-du)


def chain_mfpt_leftwards(x: np.ndarray, d: float, i_target: int) -> np.ndarray:
    """Exact MFPT of the x-chain from each i > i_target to the cells <= i_target.

    tau(i) = sum_{j=i_target}^{i-1} (sum_{k>j} pi_k) / (pi_{j+1} q(j+1 -> j)), all terms > 0.
    """
    pi, _, down = chain_rates(x, d)
    behind = np.cumsum(pi[::-1])[::-1]  # sum_{k >= j} pi_k
    steps = behind[i_target + 1 :] / (pi[i_target + 1 :] * down[i_target:])
    return np.concatenate(([0.0], np.cumsum(steps)))  # cells i_target, ..., n - 1


def chain_slowest_rate(x: np.ndarray, d: float) -> float:
    """Smallest nonzero eigenvalue of the x-chain's generator, by shooting.

    With y_0 = 1, G_i = -lam sum_{k<=i} pi_k y_k and y_{i+1} = y_i + G_i / c_i (c_i the
    conductance pi_i q(i -> i+1)) solve Q y = -lam y up to the last cell; lam is an eigenvalue
    where the right wall's flux sum_k pi_k y_k vanishes, which changes sign once below lam_3.
    """
    pi, up, _ = chain_rates(x, d)
    cond = pi[:-1] * up

    def wall_flux(lam: float) -> float:
        y, acc = 1.0, 0.0
        for i in range(x.size - 1):
            acc += pi[i] * y
            y -= lam * acc / cond[i]
        return acc + pi[-1] * y

    hi = 1e-3
    while wall_flux(hi) > 0:
        hi *= 2.0
    lo = hi
    while wall_flux(lo) < 0:
        lo /= 2.0
    return float(brentq(wall_flux, lo, hi, xtol=1e-300, rtol=1e-15))


# ----------------------------------------------------------------------------- MFPT


@pytest.mark.parametrize("ratio", [3.0, 6.0, 10.0, 15.0, 20.0, 25.0, 40.0])
def test_mfpt_matches_exact_birth_death_chain(ratio: float) -> None:
    fp, d = separable(ratio)
    x = fp.grid.x
    i_target = int(np.argmin(np.abs(x + 1.0)))  # the left minimum's cell and everything left
    target = np.zeros((x.size, NY), dtype=bool)
    target[: i_target + 1] = True
    tau = fp.mean_first_passage_time(target)
    exact = chain_mfpt_leftwards(x, d, i_target)
    off = tau[i_target + 1 :]
    rel = np.abs(off / exact[1:, None] - 1)
    i_min = int(np.argmin(np.abs(x - 1.0)))
    tau_min = exact[i_min - i_target]
    print(f"U/D={ratio:g}: tau(right minimum) {tau_min:.4g}, max rel err {rel.max():.2g}")
    assert rel.max() < CHAIN_RTOL
    assert np.all(tau[target] == 0) and np.all(off > 0)
    # monotone: farther from the target, uphill on the outer wall, takes longer (to round-off)
    step = np.diff(off, axis=0)
    assert np.all(step >= -1e-12 * off[1:])
    below = x[i_target + 1 : -1] < 0.5  # strictly where the increments exceed round-off
    assert np.all(step[below] > 0)


@pytest.mark.parametrize("ratio", [3.0, 10.0, 25.0])
def test_mfpt_converges_to_continuum_quadrature(ratio: float) -> None:
    # x-marginal MFPT from the right minimum to the left one against the 1-D double quadrature;
    # the finite-volume error is second order in hx (observed 2.2e-4, 1.0e-3, 2.7e-3 at nx=240)
    errors = []
    for nx in (120, 240):
        fp, d = separable(ratio, nx)
        x = fp.grid.x
        i_start, i_target = int(np.argmin(np.abs(x - 1.0))), int(np.argmin(np.abs(x + 1.0)))
        target = np.zeros((nx, NY), dtype=bool)
        target[: i_target + 1] = True
        tau = fp.mean_first_passage_time(target)[i_start, NY // 2]
        fine = np.linspace(BOX[0], BOX[1], 80001)
        ref = mean_first_passage_time_1d(
            fine, x_slope(fine), 1.0, 2.0 * d, float(x[i_start]), float(x[i_target])
        )
        errors.append(abs(tau / ref - 1))
    print(f"U/D={ratio:g}: tau {ref:.4g}, rel err nx=120 {errors[0]:.3g}, nx=240 {errors[1]:.3g}")
    assert errors[1] < 1.5e-4 * ratio  # ~ (hx / width)^2 * U / D
    assert 1.8 <= np.log2(errors[0] / errors[1]) <= 2.2


def asymmetric_double_well(temperature: float) -> tuple[FokkerPlanck2D, int, int, int]:
    """DoubleWell2D (curvature asymmetry g = 1.5): operator, cells of x = -1, x = 1, y = 0."""
    grid = Grid2D(-2.2, 2.2, -2.0, 2.0, 160, 96)
    fp = fokker_planck_from_landscape(DoubleWell2D(sigma=1.0), temperature, grid)
    x, y = grid.x, grid.y
    return (
        fp,
        int(np.argmin(np.abs(x + 1))),
        int(np.argmin(np.abs(x - 1))),
        int(np.argmin(np.abs(y))),
    )


def test_mfpt_of_non_separable_landscape_matches_direct_solve_at_moderate_barrier() -> None:
    # U / D ~ 5: a pivoting sparse LU of Q_ff tau = -1 is still accurate here
    fp, _, _, _ = asymmetric_double_well(0.4)
    target = np.zeros((fp.grid.nx, fp.grid.ny), dtype=bool)
    target[fp.grid.x < -1.0] = True
    free = ~target.ravel()
    q_ff = fp.operator.T.tocsr()[free][:, free].tocsc()
    direct = scipy.sparse.linalg.spsolve(q_ff, -np.ones(int(free.sum())))
    tau = fp.mean_first_passage_time(target).ravel()
    np.testing.assert_allclose(tau[free], direct, rtol=1e-10)


def test_mfpt_of_non_separable_landscape_is_consistent_at_high_barrier() -> None:
    # U / D ~ 31 (tau ~ 1e11 and 2e13): three independent solves must agree. Detailed balance
    # of the two-state reduction, pi_L / tau(L->R) = pi_R / tau(R->L), and the slowest rate
    # lam_2 = 1/tau(L->R) + 1/tau(R->L), both up to corrections of the order of in-basin
    # relaxation over escape times (observed 2e-12 and 7e-8).
    fp, i_left, i_right, j0 = asymmetric_double_well(0.07)
    x = fp.grid.x
    left = np.zeros((fp.grid.nx, fp.grid.ny), dtype=bool)
    left[x < -1.0] = True
    right = np.zeros_like(left)
    right[x > 1.0] = True
    to_left, to_right = fp.mean_first_passage_time(left), fp.mean_first_passage_time(right)
    for tau, target in ((to_left, left), (to_right, right)):
        assert np.all(tau[target] == 0) and np.all(tau[~target] > 0)
    wall = to_left[i_right:, j0]  # starting higher on the outer wall takes (a little) longer
    assert np.all(np.diff(wall) >= -1e-12 * wall[1:])
    t_rl, t_lr = to_left[i_right, j0], to_right[i_left, j0]
    p = fp.stationary()
    p_left = p[x < 0].sum() / p.sum()
    assert p_left / t_lr == pytest.approx((1 - p_left) / t_rl, rel=1e-9)
    rate = fp.relaxation_rates(1)[0].real
    assert rate == pytest.approx(1 / t_rl + 1 / t_lr, rel=1e-6)


# ----------------------------------------------------------------------------- relaxation


@pytest.mark.parametrize(
    ("ratio", "rtol"),
    [
        (3.0, RATE_RTOL),
        (10.0, RATE_RTOL),
        (20.0, RATE_RTOL),
        (30.0, RATE_RTOL),
        (40.0, RATE_RTOL_DEEP),
    ],
)
def test_slowest_relaxation_rate_matches_exact_chain(ratio: float, rtol: float) -> None:
    # The 2-D generator is the Kronecker sum of the x- and y-chains; the y-chain (curvature 1)
    # relaxes at ~1, so the slowest rate is the x-chain's.
    fp, d = separable(ratio)
    exact = chain_slowest_rate(fp.grid.x, d)
    rate = fp.relaxation_rates(1)[0]
    print(f"U/D={ratio:g}: slowest rate {exact:.4g}, rel err {abs(rate.real / exact - 1):.2g}")
    assert abs(rate.imag) <= rtol * exact
    assert rate.real == pytest.approx(exact, rel=rtol)


def test_slowest_rate_is_sum_of_inverse_mfpts_at_low_temperature() -> None:
    # Two-state reduction: lam_2 = 1/tau(A->B) + 1/tau(B->A), up to corrections of the order of
    # the ratio of in-basin relaxation to escape times (~1e-6 here: observed 4e-7).
    fp, _ = separable(20.0)
    x = fp.grid.x
    i_left, i_right = int(np.argmin(np.abs(x + 1.0))), int(np.argmin(np.abs(x - 1.0)))
    left = np.zeros((x.size, NY), dtype=bool)
    left[: i_left + 1] = True
    right = np.zeros_like(left)
    right[i_right:] = True
    tau_rl = fp.mean_first_passage_time(left)[i_right, NY // 2]
    tau_lr = fp.mean_first_passage_time(right)[i_left, NY // 2]
    rate = fp.relaxation_rates(1)[0].real
    assert rate == pytest.approx(1 / tau_rl + 1 / tau_lr, rel=1e-5)


# ----------------------------------------------------------------------------- backward Euler


@pytest.mark.parametrize("ratio", [3.0, 25.0, 40.0])
@pytest.mark.parametrize("dt_rate", [0.1, 10.0, 1e6])
def test_backward_euler_is_positive_conservative_and_reaches_stationary(
    ratio: float, dt_rate: float
) -> None:
    # Start at the shallow left minimum; dt = dt_rate / (slowest rate), up to a million slowest
    # relaxation times (one step of (I - dt A) is then the stationary problem), and enough steps
    # that the slow mode has decayed by (1 + dt_rate)^-steps < e^-46.
    fp, d = separable(ratio)
    x = fp.grid.x
    dt = dt_rate / chain_slowest_rate(x, d)
    steps = max(2, int(np.ceil(46.0 / np.log1p(dt_rate))))
    p0 = np.zeros((x.size, NY))
    p0[int(np.argmin(np.abs(x + 1.0))), NY // 2] = 1.0
    prop = fp.propagate(p0, [dt, steps * dt], dt=dt)
    assert prop.densities.min() >= 0
    assert prop.mass_error.max() < MASS_ATOL
    stat = fp.stationary()
    seen = stat > 1e-200 * stat.max()
    rel = np.abs(prop.densities[-1][seen] / stat[seen] - 1)
    print(f"U/D={ratio:g} dt={dt:.3g} ({steps} steps): max rel err vs stationary {rel.max():.2g}")
    assert rel.max() < CELL_RTOL


# ----------------------------------------------------------------------------- small solver


def test_gth_factor_matches_dense_solve() -> None:
    rng = np.random.default_rng(3)
    k = 7
    rates = rng.random((k, k)) * (rng.random((k, k)) < 0.7)
    np.fill_diagonal(rates, 0.0)
    leak = rng.random(k)
    matrix = np.diag(rates.sum(axis=0) + leak) - rates
    small = _gth_factor(rates, leak)
    rhs = rng.random((k, 2))
    np.testing.assert_allclose(small.solve(rhs), np.linalg.solve(matrix, rhs), rtol=1e-13)
    np.testing.assert_allclose(
        small.solve(rhs[:, 0], trans=True), np.linalg.solve(matrix.T, rhs[:, 0]), rtol=1e-13
    )


def test_gth_factor_keeps_relative_accuracy_with_a_tiny_leak() -> None:
    # One state leaks at 1e-280, far below round-off of the other rates. Exact identities:
    # 1^T C = leak^T gives x_2 = sum(b) / leak for C x = b, and C pi = leak_2 pi_2 e_2 (pi the
    # stationary vector of the leak-free chain) gives x_2 = pi^T b / (leak_2 pi_2) for C^T x = b.
    rng = np.random.default_rng(4)
    k = 7
    rates = rng.random((k, k)) * (rng.random((k, k)) < 0.7)
    np.fill_diagonal(rates, 0.0)
    leak = np.zeros(k)
    leak[2] = 1e-280
    small = _gth_factor(rates, leak)
    rhs = rng.random(k)
    x, xt = small.solve(rhs), small.solve(rhs, trans=True)
    pi = _gth_stationary(rates)
    assert np.all(x > 0) and np.all(xt > 0)
    assert x[2] == pytest.approx(rhs.sum() / leak[2], rel=1e-13)
    assert xt[2] == pytest.approx(pi @ rhs / (leak[2] * pi[2]), rel=1e-13)
    np.testing.assert_allclose(x / x[2], pi / pi[2], rtol=1e-13)  # O(leak) from stationary
    np.testing.assert_allclose(xt / xt[2], 1.0, rtol=1e-13)
