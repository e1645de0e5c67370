"""2-D Fokker–Planck solver: Gibbs oracle, manufactured solutions, OU dynamics, positivity."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from sgdtemp.errors import UserError
from sgdtemp.landscapes.double_well_2d import DoubleWell2D, double_well_2d_loss
from sgdtemp.theory.fokker_planck_2d import (
    MAX_WIDTH,
    FokkerPlanck2D,
    Grid2D,
    auto_domain,
    effective_potential,
    fokker_planck_from_landscape,
    selling_decomposition,
    stationary_2d,
    steepest_descent_basins,
)
from sgdtemp.theory.fokker_planck_2d.linalg import _gth_stationary
from sgdtemp.theory.kramers import mean_first_passage_time_1d

# Detailed balance holds exactly on the nodes for constant isotropic noise; what is left is the
# regularizing floor of D (D_FLOOR = 1e-12 relative) times L / D, ~1e-9 relative.
GIBBS_RTOL = 1e-8
# Per cell, relative to the cell's own Gibbs value, wherever that is above 1e-290 of the peak:
# the same floor effect (observed 1.4e-9), with room for round-off.
CELL_RTOL = 1e-7
# Observed L1 convergence order of manufactured solutions (the scheme is second order).
ORDER_BAND = (1.8, 2.3)
# OU moments on an 80 x 80 grid (h = 0.05): the Scharfetter–Gummel error is O(h^2 |H| / D).
OU_ATOL = 6e-3
# Columns of A sum to zero, relative to the largest rate.
MASS_RTOL = 1e-13


def const_tensor(d: np.ndarray):
    return lambda p: np.broadcast_to(d, p.shape[:-1] + (2, 2))


# ----------------------------------------------------------------------------- Gibbs oracle


@pytest.mark.parametrize("temperature", [0.1, 0.3])
def test_isotropic_double_well_is_gibbs(temperature: float) -> None:
    st = stationary_2d(DoubleWell2D(sigma=1.3), temperature, grid=96)
    scale = st.density.max()
    np.testing.assert_allclose(st.density, st.gibbs_density, rtol=0, atol=GIBBS_RTOL * scale)
    assert st.gibbs_noise == pytest.approx(1.3**2)
    assert len(st.basins) == 2 and all(b.exact for b in st.basins)
    for b in st.basins:
        assert b.probability == pytest.approx(b.gibbs_probability, rel=1e-7)
    assert sum(b.probability for b in st.basins) == pytest.approx(1.0, abs=1e-12)
    assert st.mass_error < 1e-12 and st.residual < 1e-14
    assert st.current_ratio < 1e-10  # detailed balance: no current
    assert st.min_density >= 0 and st.limited_cells == 0
    assert st.boundary_mass < 1e-8
    finite = st.density > 1e-100 * scale  # away from underflow
    eff = st.effective_potential[finite] * 1.3**2
    np.testing.assert_allclose(eff, (st.loss - st.loss.min())[finite], rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("temperature", "grid"), [(0.05, 80), (0.02, 80), (0.01, 100), (0.005, 140)]
)
def test_tiny_basin_is_gibbs_relative_to_its_own_mass(temperature: float, grid: int) -> None:
    # issue 4: at T = 0.05, grid 80 the left basin (Gibbs mass 1.5e-3) came out as -1.4e-4, and
    # 3723 cells were negative; at T = 0.02 its 1e-8 came out as -5e-33
    st = stationary_2d(DoubleWell2D(), temperature, grid=grid)
    assert st.min_density >= 0.0
    assert st.basins[0].gibbs_probability < 2e-3  # the left basin holds very little mass
    for b in st.basins:
        assert b.probability == pytest.approx(b.gibbs_probability, rel=CELL_RTOL)
    peak = st.gibbs_density.max()
    seen = st.gibbs_density > 1e-290 * peak
    assert st.gibbs_density[seen].min() < 1e-30 * peak  # the law spans more than 30 decades
    np.testing.assert_allclose(st.density[seen], st.gibbs_density[seen], rtol=CELL_RTOL, atol=0)


def test_drift_without_potential_finds_its_traps() -> None:
    # no potential: the pinned sinks come from the drift along each jump alone
    land, temperature = DoubleWell2D(), 0.05
    grid = Grid2D(*auto_domain(land, temperature), 100, 100)

    def on(fn):
        return lambda p: fn(torch.from_numpy(np.ascontiguousarray(p))).numpy()

    fp = FokkerPlanck2D(
        grid,
        lambda p: np.broadcast_to(0.5 * temperature * np.eye(2), p.shape[:-1] + (2, 2)),
        drift=lambda p: -on(land.grad)(p),
    )
    p = fp.stationary()
    assert p.min() >= 0.0
    gibbs = fp.normalize(np.exp(-(on(land.loss)(grid.points())) / (0.5 * temperature)))
    left = grid.points()[..., 0] < float(land.saddles()[0, 0])
    # the drift's trapezoid rule along each jump is O(h^2): 0.2 % here, not a sign error
    assert p[left].sum() == pytest.approx(gibbs[left].sum(), rel=0.02)


def test_gth_keeps_tiny_stationary_weights_relative() -> None:
    # a 4-state birth-death chain with up-rates 1e-100: pi_k = 1e-100 ** k exactly
    up, down = 1e-100, 1.0
    rates = np.zeros((4, 4))
    for k in range(3):
        rates[k + 1, k], rates[k, k + 1] = up, down  # rates[j, l]: l -> j
    pi = _gth_stationary(rates)
    np.testing.assert_allclose(pi, [1.0, 1e-100, 1e-200, 1e-300], rtol=1e-14)
    with pytest.raises(UserError, match="reducible"):
        _gth_stationary(np.array([[0.0, 0.0], [1.0, 0.0]]))


def test_higher_temperature_moves_mass_to_the_shallow_wide_basin() -> None:
    land = DoubleWell2D()
    p_left = [stationary_2d(land, t, grid=80).basins[0].probability for t in (0.1, 0.2, 0.4)]
    assert p_left[0] < p_left[1] < p_left[2]


# ----------------------------------------------------------------------------- manufactured


def manufactured(cross: float):
    r"""$p^* \propto e^{-\Psi}$, full state-dependent $D$, $b = \nabla\cdot D - D\nabla\Psi$."""

    def psi(p):
        x, y = p[..., 0], p[..., 1]
        return x**4 / 2 + x * y / 2 + y**2 + 0.3 * np.sin(2 * x)

    def dpsi(p):
        x, y = p[..., 0], p[..., 1]
        return np.stack([2 * x**3 + y / 2 + 0.6 * np.cos(2 * x), x / 2 + 2 * y], -1)

    def tensor(p):
        x, y = p[..., 0], p[..., 1]
        dxx = 0.5 * (1 + 0.5 * np.sin(x) ** 2)
        dyy = 0.5 * (1 + 0.3 * y**2 / (1 + y**2))
        dxy = 0.5 * cross * np.cos(x + y)  # changes sign inside the box
        return np.stack([np.stack([dxx, dxy], -1), np.stack([dxy, dyy], -1)], -2)

    def div(p):
        x, y = p[..., 0], p[..., 1]
        dxx_x = 0.5 * 0.5 * 2 * np.sin(x) * np.cos(x)
        dxy = -0.5 * cross * np.sin(x + y)
        dyy_y = 0.5 * 0.3 * 2 * y / (1 + y**2) ** 2
        return np.stack([dxx_x + dxy, dxy + dyy_y], -1)

    def drift(p):
        return div(p) - np.einsum("...ij,...j->...i", tensor(p), dpsi(p))

    return psi, tensor, drift


def l1_errors(
    cross: float, aspect: int, sizes: list[int]
) -> tuple[list[float], list[FokkerPlanck2D]]:
    psi, tensor, drift = manufactured(cross)
    errors, ops = [], []
    for n in sizes:
        grid = Grid2D(-3.0, 3.0, -3.0, 3.0, n, aspect * n)
        fp = FokkerPlanck2D(grid, tensor, drift=drift)
        p = fp.stationary()
        exact = fp.normalize(np.exp(-psi(grid.points())))
        errors.append(float(np.abs(p - exact).sum() * grid.cell_area))
        ops.append(fp)
    return errors, ops


@pytest.mark.parametrize(
    ("cross", "aspect"), [(0.8, 1), (0.8, 2)], ids=["seven-point", "wide-selling-stencil"]
)
def test_second_order_convergence_full_tensor(cross: float, aspect: int) -> None:
    sizes = [24, 48, 96]
    errors, ops = l1_errors(cross, aspect, sizes)
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    print(
        f"cross={cross} aspect={aspect}: h={[6 / n for n in sizes]} L1 errors={errors} "
        f"orders={orders.round(3).tolist()}"
    )
    assert ORDER_BAND[0] <= orders[-1] <= ORDER_BAND[1]
    assert all(fp.limited_cells == 0 and fp.positivity_guaranteed for fp in ops)
    if aspect == 2:
        assert max(ops[-1].stencil_width) == 2  # Selling needed (1, 2)-type offsets


# ----------------------------------------------------------------------------- dynamics


def ou_operator(n: int = 80) -> tuple[FokkerPlanck2D, np.ndarray, np.ndarray]:
    rot = np.array([[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]])
    h = rot @ np.diag([1.0, 2.5]) @ rot.T
    d = np.array([[0.08, 0.03], [0.03, 0.05]])
    grid = Grid2D(-2.0, 2.0, -2.0, 2.0, n, n)
    fp = FokkerPlanck2D(grid, const_tensor(d), drift=lambda p: -p @ h.T)
    return fp, h, d


def ou_moment_error(n: int) -> float:
    fp, h, d = ou_operator(n)
    pts = fp.grid.points()
    mu0, s0 = np.array([0.8, -0.5]), 0.02 * np.eye(2)
    diff = pts - mu0
    p0 = np.exp(-0.5 * np.einsum("...i,ij,...j->...", diff, np.linalg.inv(s0), diff))
    times = np.array([0.0, 0.5, 2.0])
    prop = fp.propagate(p0, times)
    assert prop.mass_error.max() < 1e-12
    worst = 0.0
    for t, p in zip(times[1:], prop.densities[1:]):
        e = scipy.linalg.expm(-h * t)
        cov = scipy.linalg.solve_continuous_lyapunov(h, 2 * d)  # dS/dt = -HS - SH + 2D
        cov = cov + e @ (s0 - cov) @ e.T
        w = p * fp.grid.cell_area
        m_num = np.einsum("ij,ijk->k", w, pts)
        c_num = np.einsum("ij,ijk,ijl->kl", w, pts - m_num, pts - m_num)
        worst = max(worst, np.abs(m_num - e @ mu0).max(), np.abs(c_num - cov).max())
    return float(worst)


def test_ou_propagation_matches_moments_to_second_order() -> None:
    coarse, fine = ou_moment_error(40), ou_moment_error(80)
    print(f"OU mean/cov error: h=0.1 {coarse:.3g}, h=0.05 {fine:.3g}")
    assert fine < OU_ATOL
    assert 1.6 <= np.log2(coarse / fine) <= ORDER_BAND[1]  # h = 0.1 is still pre-asymptotic


def test_backward_euler_is_positive_conservative_and_relaxes() -> None:
    fp, _, _ = ou_operator(48)
    p0 = np.zeros((48, 48))
    p0[5, 40] = 1.0  # a point mass in a corner
    prop = fp.propagate(p0, [0.3, 1.0, 30.0], dt=0.05)
    assert prop.densities.min() >= 0
    assert prop.mass_error.max() < 1e-12
    np.testing.assert_allclose(prop.densities[-1], fp.stationary(), atol=1e-8)
    exact = fp.propagate(p0, [1.0]).densities[0]
    err_coarse = np.abs(fp.propagate(p0, [1.0], dt=0.05).densities[0] - exact).sum()
    err_fine = np.abs(fp.propagate(p0, [1.0], dt=0.025).densities[0] - exact).sum()
    assert 1.7 < err_coarse / err_fine < 2.3  # first order in dt


def test_relaxation_rates_are_ou_spectrum() -> None:
    exact = np.array([1.0, 2.0, 2.5])  # n1 * 1 + n2 * 2.5 for the eigenvalues (1, 2.5) of H
    err = [np.abs(ou_operator(n)[0].relaxation_rates(3).real / exact - 1).max() for n in (48, 96)]
    assert err[1] < 0.015
    assert ORDER_BAND[0] <= np.log2(err[0] / err[1]) <= ORDER_BAND[1]


def test_mass_conservation_columns_sum_to_zero() -> None:
    land = double_well_2d_loss(256, generator=torch.Generator().manual_seed(0))
    box = auto_domain(land, 0.2)
    fp = fokker_planck_from_landscape(land, 0.2, Grid2D(*box, 40, 60))
    col = np.asarray(fp.operator.sum(axis=0)).ravel()
    assert np.abs(col).max() <= MASS_RTOL * np.abs(fp.operator.diagonal()).max()


def test_mfpt_of_separable_process_is_one_dimensional() -> None:
    # x and y independent: the time for x to pass x_t is the 1-D first-passage time.
    def loss(p):
        return (p[..., 0] ** 2 - 1) ** 2 + 0.5 * p[..., 1] ** 2

    def grad(p):
        return np.stack([4 * p[..., 0] * (p[..., 0] ** 2 - 1), p[..., 1]], -1)

    temp, errors = 0.5, []
    for n in (60, 120):
        grid = Grid2D(-2.2, 2.2, -2.0, 2.0, n, 16)
        fp = FokkerPlanck2D(
            grid, const_tensor(0.5 * temp * np.eye(2)), drift=lambda p: -grad(p), potential=loss
        )
        i_start, i_target = np.searchsorted(grid.x, -1.0), np.searchsorted(grid.x, 1.0)
        target = np.zeros((n, 16), dtype=bool)
        target[i_target:] = True
        tau = fp.mean_first_passage_time(target)[i_start, 8]
        x = np.linspace(-2.2, 2.2, 20001)
        ref = mean_first_passage_time_1d(
            x, 4 * x * (x**2 - 1), 1.0, temp, grid.x[i_start], grid.x[i_target]
        )
        errors.append(abs(tau / ref - 1))
    assert errors[1] < 0.02 and errors[1] < errors[0]


# ----------------------------------------------------------------------------- detailed balance


def test_current_detects_broken_detailed_balance() -> None:
    temp = 0.3
    noise = const_tensor(0.5 * temp * np.diag([1.0, 0.25]))
    grid = Grid2D(-2.0, 2.0, -3.0, 3.0, 64, 64)
    land = DoubleWell2D()

    def run(loss_fn, grad_fn) -> float:
        fp = FokkerPlanck2D(grid, noise, drift=lambda p: -grad_fn(p), potential=loss_fn)
        p = fp.stationary()
        j = np.sqrt((fp.current(p) ** 2).sum(-1)).max()
        return float(j / np.abs(p[..., None] * grad_fn(p=grid.points())).max())

    def t_loss(p):
        return land.loss(torch.from_numpy(np.ascontiguousarray(p))).numpy()

    def t_grad(p):
        return land.grad(torch.from_numpy(np.ascontiguousarray(p))).numpy()

    # separable L: C^{-1} grad L is a gradient even with anisotropic C -> no current
    def s_loss(p):
        return (p[..., 0] ** 2 - 1) ** 2 + 0.5 * p[..., 1] ** 2

    def s_grad(p):
        return np.stack([4 * p[..., 0] * (p[..., 0] ** 2 - 1), p[..., 1]], -1)

    assert run(s_loss, s_grad) < 1e-10
    assert run(t_loss, t_grad) > 1e-3  # L_xy != 0 and C anisotropic: a stationary current


def test_data_noise_reports_current_and_stays_positive() -> None:
    land = double_well_2d_loss(512, generator=torch.Generator().manual_seed(0))
    st = stationary_2d(land, 0.2, grid=64)
    assert st.current_ratio > 1e-3
    assert st.min_density >= 0
    assert st.mass_error < 1e-12
    gibbs = [b.gibbs_probability for b in st.basins]
    fp = [b.probability for b in st.basins]
    assert abs(fp[0] - gibbs[0]) > 0.05  # state-dependent noise: not the Gibbs law in L


# ----------------------------------------------------------------------------- stencils


def test_selling_decomposition_reconstructs_and_is_non_negative() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 2, 2))
    d = a @ np.swapaxes(a, 1, 2) + 1e-3 * np.eye(2)
    offsets, weights, ok = selling_decomposition(d)
    assert ok.all() and (weights >= 0).all()
    rebuilt = np.einsum("ni,nia,nib->nab", weights, offsets, offsets)
    np.testing.assert_allclose(rebuilt, d, rtol=1e-10, atol=1e-12)
    # diagonally dominant tensors get Kushner's seven-point stencil
    dd = np.array([[[2.0, 0.5], [0.5, 1.0]], [[2.0, -0.7], [-0.7, 1.0]]])
    offsets, weights, _ = selling_decomposition(dd)
    for off, w, t in zip(offsets, weights, dd):
        used = {tuple(abs(o)) if o[0] != 0 else tuple(abs(o)) for o, wi in zip(off, w) if wi > 0}
        assert used <= {(1, 0), (0, 1), (1, 1)}
        assert np.isclose(
            sum(wi for o, wi in zip(off, w) if abs(o[0]) == abs(o[1]) == 1), abs(t[0, 1])
        )


def test_nearly_singular_noise_is_limited_but_positive() -> None:
    v = np.array([1.0, (np.sqrt(5) - 1) / 2])  # golden direction: far from every lattice vector
    d = 0.05 * (np.outer(v, v) + 1e-7 * np.eye(2))
    grid = Grid2D(-2.0, 2.0, -2.0, 2.0, 32, 32)
    fp = FokkerPlanck2D(grid, const_tensor(d), drift=lambda p: -p)
    p = fp.stationary()
    assert fp.limited_cells > 0 and fp.positivity_guaranteed
    assert p.min() >= 0 and fp.mass_error(p) < 1e-12
    assert max(fp.stencil_width) <= MAX_WIDTH


# ----------------------------------------------------------------------------- basins, inputs


def test_steepest_descent_basins_quadrants_and_ties() -> None:
    x = np.linspace(-2, 2, 40)  # even: no cell on the symmetry lines, ties across them
    xx, yy = np.meshgrid(x, x, indexing="ij")
    v = (xx**2 - 1) ** 2 + (yy**2 - 1) ** 2
    labels, minima = steepest_descent_basins(v)
    assert len(minima) == 4
    quadrant = (xx > 0).astype(int) * 2 + (yy > 0).astype(int)
    for q in range(4):
        assert len(np.unique(labels[quadrant == q])) == 1
    flat = np.zeros((10, 10))
    assert len(steepest_descent_basins(flat)[1]) == 1


def test_effective_potential_of_gaussian() -> None:
    p = np.exp(-(np.linspace(-3, 3, 7) ** 2))
    np.testing.assert_allclose(effective_potential(p, 0.5), 0.25 * np.linspace(-3, 3, 7) ** 2)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: stationary_2d(DoubleWell2D(), 0.0), "temperature"),
        (lambda: stationary_2d(DoubleWell2D(), 0.1, grid=4), "too small"),
        (lambda: stationary_2d(DoubleWell2D(), 0.01, grid=24), "too coarse.*at least"),
        (lambda: stationary_2d(DoubleWell2D(), 0.1, domain=(0.0, 2.0, -1.0, 1.0)), "outside"),
        (lambda: Grid2D(1.0, 0.0, 0.0, 1.0, 10, 10), "empty domain"),
        (
            lambda: FokkerPlanck2D(
                Grid2D(-1, 1, -1, 1, 10, 10),
                const_tensor(np.array([[1.0, 2.0], [2.0, 1.0]])),
                drift=lambda p: -p,
            ),
            "not positive semi-definite at",
        ),
    ],
    ids=["T", "grid-small", "grid-coarse", "domain", "empty", "not-psd"],
)
def test_bad_input(call, match: str) -> None:
    with pytest.raises(UserError, match=match):
        call()
