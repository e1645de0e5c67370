"""Escape rates with anisotropic noise, first passage of SGD and the SDE, discrete-time SGD."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sgdtemp.errors import UserError
from sgdtemp.landscapes._base import AbstractLandscape
from sgdtemp.landscapes.double_well_2d import DoubleWell2D, DoubleWell2DLoss
from sgdtemp.landscapes.quadratic import QuadraticLoss
from sgdtemp.simulate import run_sde, run_sgd
from sgdtemp.theory.escape import (
    FirstPassage,
    discrete_time_covariances,
    exponential_rate,
    eyring_kramers_rate,
    find_saddle,
    first_passage_times,
    minimum_energy_path,
    two_state_rates,
)
from sgdtemp.theory.fokker_planck_2d import fokker_planck_from_landscape, stationary_2d

# Eyring–Kramers is exact as T -> 0; its relative error is O(T / barrier).
EK_RTOL_LOW_T = 0.07  # at barrier / T >= 10
# Simulated rates: statistical error ~ 1/sqrt(hits) ~ 5 %, plus Euler / finite-lr bias.
SIM_RTOL = 0.15
EK_SIM_RTOL = 0.3  # Eyring–Kramers vs simulation at barrier / T = 3..4
COV_RTOL = 0.1  # simulated stationary variance vs the exact discrete Lyapunov solution


@pytest.fixture(autouse=True)
def single_thread():
    """Chains of 2-D states are tiny tensors: one intra-op thread avoids contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mirrored_data_loss(sx: float = 1.0, sy: float = 0.5, trans: float = 0.2) -> DoubleWell2DLoss:
    """Data symmetric under y -> -y: anisotropic, state-dependent noise, diagonal on the axis."""
    gen = torch.Generator().manual_seed(1)
    n = 256
    a = trans * torch.randn(n, dtype=torch.float64, generator=gen)
    a = a - a.mean()
    xi = torch.randn(n, dtype=torch.float64, generator=gen)
    xi = sx * (xi - xi.mean()) / xi.std(unbiased=False)
    zeta = torch.randn(n, dtype=torch.float64, generator=gen)
    zeta = sy * zeta / zeta.pow(2).mean().sqrt()
    zero = torch.zeros(2 * n, dtype=torch.float64)
    shift = torch.stack([torch.cat([a, a]), zero], -1)
    tilt = torch.stack([torch.cat([xi, xi]), torch.cat([zeta, -zeta])], -1)
    return DoubleWell2DLoss(shift, tilt)


class CurvedValley(AbstractLandscape):
    """$(x^2-1)^2 + 2(y - x^2/2)^2$: minima at (+-1, 1/2), saddle at 0, a parabolic path."""

    name = "curved-valley"
    dim = 2

    def loss(self, theta):
        x, y = theta[..., 0], theta[..., 1]
        return (x**2 - 1) ** 2 + 2 * (y - 0.5 * x**2) ** 2

    def grad(self, theta):
        x, y = theta[..., 0], theta[..., 1]
        r = y - 0.5 * x**2
        return torch.stack([4 * x * (x**2 - 1) - 4 * r * x, 4 * r], -1)

    def hessian(self, theta):
        x, y = theta[..., 0], theta[..., 1]
        r = y - 0.5 * x**2
        hxx = 12 * x**2 - 4 + 4 * x**2 - 4 * r
        hxy = -4 * x
        return torch.stack([torch.stack([hxx, hxy], -1), torch.stack([hxy, 4 + 0 * x], -1)], -2)

    def noise_cov(self, theta):
        return torch.eye(2, dtype=theta.dtype).expand(*theta.shape[:-1], 2, 2)

    def minimizers(self):
        return torch.tensor([[-1.0, 0.5], [1.0, 0.5]], dtype=torch.float64)


def kramers_closed_form(
    land: AbstractLandscape, temperature: float, sigma2: float, k: int
) -> float:
    """Classic Kramers (isotropic constant noise): written out from the Hessians."""
    m = land.minimizers()[k]
    s = torch.from_numpy(find_saddle(land, land.minimizers().mean(0).numpy() + 0.01))
    hm, hs = land.hessian(m), land.hessian(s)
    lam = -float(torch.linalg.eigvalsh(hs)[0])
    barrier = float(land.loss(s) - land.loss(m))
    det = math.sqrt(float(torch.det(hm)) / abs(float(torch.det(hs))))
    return lam / (2 * math.pi) * det * math.exp(-2 * barrier / (temperature * sigma2))


# ----------------------------------------------------------------------------- paths


def test_path_and_saddle_of_double_well() -> None:
    land = DoubleWell2D(t=0.3, g=-1.0)
    path = minimum_energy_path(land, *land.minimizers())
    np.testing.assert_allclose(path.saddle, land.saddles()[0].numpy(), atol=1e-12)
    assert np.abs(path.images[:, 1]).max() < 1e-12  # the axis y = 0
    assert path.losses.argmax() == path.saddle_index
    esc = eyring_kramers_rate(land, 0.2, start=0, path=path)
    assert esc.straight_path and esc.transverse_factor == pytest.approx(1.0, abs=1e-6)


def test_curved_path_follows_the_valley() -> None:
    land = CurvedValley()
    path = minimum_energy_path(land, *land.minimizers())
    # a minimum-energy path: the gradient is parallel to the path (no perpendicular part)
    tangent = np.gradient(path.images, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    g = land.grad(torch.from_numpy(path.images)).numpy()
    perp = g - (g * tangent).sum(1, keepdims=True) * tangent
    assert np.abs(perp[1:-1]).max() < 0.02 * np.abs(g).max()
    assert np.ptp(path.images[:, 1]) > 0.1  # and it bends
    np.testing.assert_allclose(path.saddle, [0.0, 0.0], atol=1e-10)
    esc = eyring_kramers_rate(land, 0.1, start=1, path=path)
    assert not esc.straight_path
    # isotropic noise: path-independent, exactly Kramers
    assert esc.rate == pytest.approx(kramers_closed_form(land, 0.1, 1.0, 1), rel=1e-7)


@pytest.mark.parametrize("k", [0, 1])
def test_isotropic_rate_is_classic_kramers(k: int) -> None:
    land = DoubleWell2D(sigma=1.7)
    esc = eyring_kramers_rate(land, 0.15, start=k)
    # rel 1e-7: the transverse factor is 1 here up to the ODE tolerance
    assert esc.rate == pytest.approx(kramers_closed_form(land, 0.15, 1.7**2, k), rel=1e-7)
    assert esc.quasi_potential_barrier == pytest.approx(2 * esc.loss_barrier / 1.7**2, rel=1e-12)


# ----------------------------------------------------------------------------- vs Fokker–Planck


def fp_rates(land: AbstractLandscape, temperature: float, grid: int) -> tuple[float, float]:
    st = stationary_2d(land, temperature, grid=grid)
    fp = fokker_planck_from_landscape(land, temperature, st.grid)
    return two_state_rates(
        float(fp.relaxation_rates(1)[0].real), [b.probability for b in st.basins]
    )


def test_isotropic_rates_converge_to_fokker_planck_as_t_falls() -> None:
    land = DoubleWell2D()
    errors = []
    for temp in (0.3, 0.15):  # barrier / T from 6 to 15
        exact = fp_rates(land, temp, 100)
        ek = [eyring_kramers_rate(land, temp, start=k).rate for k in (0, 1)]
        errors.append(max(abs(a / b - 1) for a, b in zip(ek, exact)))
    print(f"isotropic Eyring–Kramers relative error at T = 0.3, 0.15: {errors}")
    assert errors[0] > errors[1]
    assert errors[1] < EK_RTOL_LOW_T


@pytest.mark.slow
def test_anisotropic_rates_need_the_nonreversible_correction() -> None:
    land = mirrored_data_loss()
    temp = 0.1  # barrier / T about 10 and 12
    exact = fp_rates(land, temp, 200)
    esc = [eyring_kramers_rate(land, temp, start=k) for k in (0, 1)]
    ratios = [e.rate / r for e, r in zip(esc, exact)]
    uncorrected = [e.rate / e.transverse_factor / r for e, r in zip(esc, exact)]
    print(f"anisotropic: EK / FP = {ratios}; without the transverse factor {uncorrected}")
    assert all(abs(r - 1) < EK_RTOL_LOW_T for r in ratios)
    assert all(abs(r - 1) > 0.3 for r in uncorrected)  # the correction is what makes it right


# ----------------------------------------------------------------------------- simulations


def fp_mean_first_passage(land: AbstractLandscape, temperature: float, radius: float) -> float:
    st = stationary_2d(land, temperature, grid=150)
    fp = fokker_planck_from_landscape(land, temperature, st.grid)
    mins = land.minimizers().numpy()
    target = np.linalg.norm(st.grid.points() - mins[1], axis=-1) < radius
    return float(fp.mean_first_passage_time(target)[st.grid.cell_of(mins[0])])


@pytest.mark.slow
@pytest.mark.parametrize(("method", "temperature"), [("sgd", 0.02), ("sgd", 0.016), ("sde", 0.02)])
def test_simulated_escape_matches_fokker_planck_and_kramers(
    method: str, temperature: float
) -> None:
    land = mirrored_data_loss(sx=4.5, sy=2.0)  # anisotropic, state-dependent minibatch noise
    radius = 0.3
    mins = land.minimizers()
    tau = fp_mean_first_passage(land, temperature, radius)
    ek = eyring_kramers_rate(land, temperature, start=0)
    gen = torch.Generator().manual_seed(7)
    step = temperature if method == "sgd" else 0.02  # SGD: lr = T at B = 1; SDE: dt
    chains = 300 if method == "sgd" else 200  # run_sde's general stepper is slower

    def advance(theta: torch.Tensor, n: int) -> torch.Tensor:
        if method == "sgd":
            traj = run_sgd(
                land, theta, lr=step, batch_size=1, n_steps=n, record_every=n, generator=gen
            )
        else:
            traj = run_sde(
                land,
                theta,
                temperature=temperature,
                dt=step,
                n_steps=n,
                record_every=n,
                generator=gen,
            )
        return traj.final

    passage = first_passage_times(
        advance,
        mins[0].repeat(chains, 1),
        lambda th: (th - mins[1]).norm(dim=-1) < radius,
        max_steps=int(1.2 * tau / step),
        check_every=20,
    )
    rate, stderr = exponential_rate(passage, time_per_step=step)
    print(
        f"{method} T={temperature}: barrier/T={ek.exponent:.2f}, rate {rate:.4g} +- "
        f"{stderr:.2g}, Fokker–Planck 1/MFPT {1 / tau:.4g}, Eyring–Kramers {ek.rate:.4g}"
    )
    assert rate == pytest.approx(1 / tau, rel=SIM_RTOL)
    assert rate == pytest.approx(ek.rate, rel=EK_SIM_RTOL)


# ----------------------------------------------------------------------------- helpers


def test_first_passage_and_censored_rate() -> None:
    fp = first_passage_times(
        lambda th, n: th + n * torch.tensor([[1.0], [2.0], [0.0]]),
        torch.zeros(3, 1),
        lambda th: th[:, 0] >= 30,
        max_steps=50,
        check_every=4,
    )
    assert fp.times.tolist() == [32.0, 16.0, 50.0] and fp.hit.tolist() == [True, True, False]
    rate, err = exponential_rate(fp, time_per_step=0.5)
    assert rate == pytest.approx(2 / (98 * 0.5)) and err == pytest.approx(rate / math.sqrt(2))
    with pytest.raises(UserError, match="no chain"):
        exponential_rate(FirstPassage(np.ones(2), np.zeros(2, dtype=bool), 1))


def test_two_state_rates_balance() -> None:
    k01, k10 = two_state_rates(0.3, [0.2, 0.8])
    assert k01 + k10 == pytest.approx(0.3) and 0.2 * k01 == pytest.approx(0.8 * k10)


def test_bad_input() -> None:
    with pytest.raises(UserError, match="start"):
        eyring_kramers_rate(DoubleWell2D(), 0.1, start=2)
    with pytest.raises(UserError, match="temperature"):
        eyring_kramers_rate(DoubleWell2D(), -0.1, start=0)
    with pytest.raises(UserError, match="saddle"):
        find_saddle(DoubleWell2D(), [1.0, 0.0])  # a minimum, not a saddle


# ----------------------------------------------------------------------------- discrete time


def test_discrete_covariance_closed_forms() -> None:
    eta, h, sigma2, batch = 0.3, 4.0, 2.0, 8
    tab = discrete_time_covariances(h, sigma2, eta / batch, [1e-6, eta, 0.5])
    assert tab.sgd[1, 0, 0] == pytest.approx(eta * sigma2 / (batch * h * (2 - eta * h)), rel=1e-12)
    assert tab.sde[0, 0] == pytest.approx(eta * sigma2 / (2 * batch * h), rel=1e-12)
    assert tab.trace_ratio[0] == pytest.approx(1.0, abs=1e-5)
    assert math.isnan(tab.trace_ratio[2])  # eta * h = 2: unstable


def test_iso_temperature_pairs_separate_as_lr_lambda_approaches_two() -> None:
    """Equal T = lr / B: equal stationary spread at small lr, not at lr * lambda_max -> 2."""
    temperature, sigma, lam = 0.004, 1.0, 10.0
    h = torch.diag(torch.tensor([1.0, lam], dtype=torch.float64))
    gen = torch.Generator().manual_seed(0)
    xi = torch.randn(4096, 2, generator=gen, dtype=torch.float64)
    xi = xi - xi.mean(0)
    xi = sigma * xi @ torch.linalg.inv(torch.linalg.cholesky(xi.T @ xi / 4096)).T  # C = I
    loss = QuadraticLoss(h, xi)
    lrs = [0.004, 0.016, 0.08, 0.16]  # B = 1, 4, 20, 40: lr * lambda_max = 0.04 ... 1.6
    tab = discrete_time_covariances(h.numpy(), np.eye(2) * sigma**2, temperature, lrs)
    measured = []
    for lr in lrs:
        batch = round(lr / temperature)
        burn = int(8 / (lr * lam))  # 8 relaxation times of the stiff direction (start at mean)
        traj = run_sgd(
            loss,
            torch.zeros(800, 2, dtype=torch.float64),
            lr=lr,
            batch_size=batch,
            n_steps=burn + 320,
            record_every=40,
            replacement=True,
            generator=gen,
        )
        tail = traj.thetas[-8:, :, 1]  # stiff direction: 8 nearly independent snapshots
        measured.append(float(tail.var()))
    theory = tab.sgd[:, 1, 1]
    print(
        f"stiff-direction variance: lr*lambda={tab.lr_lambda_max.tolist()} "
        f"measured={measured} exact={theory.tolist()} SDE={tab.sde[1, 1]}"
    )
    np.testing.assert_allclose(measured, theory, rtol=COV_RTOL)
    assert measured[1] == pytest.approx(measured[0], rel=COV_RTOL)  # invariance at small lr
    assert measured[3] > 3 * measured[0]  # broken near the stability edge (exact ratio 5)
