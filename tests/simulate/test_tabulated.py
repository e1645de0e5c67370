"""Tabulated 1-D landscapes: exactness at the nodes, convergence order, the fused SDE kernel."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sgdtemp.errors import UserError
from sgdtemp.landscapes import (
    MixturePotential,
    QuadraticLoss,
    TwoMinimaLoss,
    sample_two_minima_data,
)
from sgdtemp.simulate import Tabulated1D, run_sde
from sgdtemp.simulate.sde import _ExactStepper

LO, HI = -5.0, 6.0
RTOL = 1e-12
# Empirical convergence orders (log2 of the error ratio when h halves) must fall in these bands:
# cubic Hermite L' ~ h^4, its derivative ~ h^3, its integral ~ h^4, linear sqrt(C) ~ h^2.
ORDER_BANDS = {"grad": (3.5, 4.6), "hessian": (2.5, 3.6), "loss": (3.5, 4.6), "noise": (1.7, 2.4)}
# Tabulated vs exact SDE driven by the same noise: paths agree to this (interpolation error).
PATH_ATOL = 1e-6


@pytest.fixture(scope="module")
def loss() -> TwoMinimaLoss:
    gen = torch.Generator().manual_seed(0)
    x, xi = sample_two_minima_data(128, translation_std=0.05, tilt_std=4.0, generator=gen)
    return TwoMinimaLoss(MixturePotential(), x, xi)


def test_exact_at_the_nodes(loss: TwoMinimaLoss) -> None:
    tab = Tabulated1D.from_landscape(loss, LO, HI, 111)
    nodes = tab.grid.unsqueeze(1)
    torch.testing.assert_close(tab.grad(nodes), loss.grad(nodes), rtol=RTOL, atol=1e-12)
    torch.testing.assert_close(tab.hessian(nodes), loss.hessian(nodes), rtol=RTOL, atol=1e-12)
    torch.testing.assert_close(tab.noise_cov(nodes), loss.noise_cov(nodes), rtol=RTOL, atol=1e-12)
    assert float(tab.loss(nodes[:1])) == pytest.approx(float(loss.loss(nodes[:1])), rel=RTOL)


def test_interpolation_converges_at_the_expected_orders(loss: TwoMinimaLoss) -> None:
    points = torch.linspace(LO + 0.013, HI - 0.017, 997, dtype=torch.float64).unsqueeze(1)
    exact = {
        "grad": loss.grad(points),
        "hessian": loss.hessian(points),
        "loss": loss.loss(points),
        "noise": loss.noise_cov(points).sqrt(),
    }
    errors: dict[str, list[float]] = {k: [] for k in exact}
    for n in (111, 221, 441):  # h = 0.1, 0.05, 0.025
        tab = Tabulated1D.from_landscape(loss, LO, HI, n)
        approx = {
            "grad": tab.grad(points),
            "hessian": tab.hessian(points),
            "loss": tab.loss(points),
            "noise": tab.noise_sqrt(points),
        }
        for k in exact:
            errors[k].append(float((approx[k].reshape(-1) - exact[k].reshape(-1)).abs().max()))
    for k, (low, high) in ORDER_BANDS.items():
        orders = np.log2(np.array(errors[k][:-1]) / np.array(errors[k][1:]))
        assert np.all((orders > low) & (orders < high)), (k, errors[k], orders)


def test_quadratic_extension_beyond_the_ends() -> None:
    h, xi = 2.0, torch.tensor([[1.0], [3.0]], dtype=torch.float64)
    quad = QuadraticLoss(torch.tensor([[h]], dtype=torch.float64), xi)
    tab = Tabulated1D.from_landscape(quad, 0.0, 1.0, 21)  # the minimum -1 lies left of the table
    far = torch.tensor([[-30.0], [-1.0], [0.0], [1.0], [25.0]], dtype=torch.float64)
    # A quadratic is reproduced exactly by cubic Hermite pieces and by the Taylor extension.
    torch.testing.assert_close(tab.grad(far), quad.grad(far), rtol=RTOL, atol=1e-12)
    torch.testing.assert_close(tab.loss(far), quad.loss(far), rtol=RTOL, atol=1e-10)
    torch.testing.assert_close(tab.noise_cov(far), quad.noise_cov(far), rtol=RTOL, atol=1e-12)
    # A minimum beyond the table is found on the extension.
    assert float(tab.minimizers()) == pytest.approx(float(quad.minimizers()), rel=1e-12)


def test_minimizers_match_the_exact_landscape(loss: TwoMinimaLoss) -> None:
    tab = Tabulated1D.from_landscape(loss, LO, HI, 1101)
    torch.testing.assert_close(tab.minimizers(), loss.minimizers(), rtol=0, atol=1e-7)


def test_fused_kernel_equals_the_generic_step(loss: TwoMinimaLoss) -> None:
    """run_sde's fast path vs the landscape's own grad and noise_cov, fed the same normals."""
    tab = Tabulated1D.from_landscape(loss, LO, HI, 221)
    chains, steps, temp, dt = 64, 200, 0.05, 0.01
    start = torch.linspace(-4.0, 5.0, chains, dtype=torch.float64).unsqueeze(1)
    fast = run_sde(
        tab,
        start,
        temperature=temp,
        dt=dt,
        n_steps=steps,
        generator=torch.Generator().manual_seed(1),
    )
    slow = _ExactStepper(tab, start, temp, dt)
    z = torch.randn(
        (steps, chains, 1), generator=torch.Generator().manual_seed(1), dtype=torch.float32
    ).to(torch.float64)
    expected = [start]
    for k in range(steps):
        slow.step(z[k])
        expected.append(slow.state().clone())
    torch.testing.assert_close(fast.thetas, torch.stack(expected), rtol=1e-10, atol=1e-10)


def test_tabulated_sde_follows_the_exact_sde(loss: TwoMinimaLoss) -> None:
    tab = Tabulated1D.from_landscape(loss, LO, HI, 2201)
    start = torch.linspace(-3.0, 4.0, 16, dtype=torch.float64).unsqueeze(1)
    args = {"temperature": 0.05, "dt": 0.01, "n_steps": 100, "record_every": 20}
    exact = run_sde(loss, start, generator=torch.Generator().manual_seed(2), **args)
    fast = run_sde(tab, start, generator=torch.Generator().manual_seed(2), **args)
    torch.testing.assert_close(fast.thetas, exact.thetas, rtol=0, atol=PATH_ATOL)


@pytest.mark.parametrize(
    "lo, hi, n", [(1.0, 1.0, 10), (0.0, math.inf, 10), (0.0, 1.0, 2), (0.0, 1.0, 5.0)]
)
def test_from_landscape_rejects_bad_grids(loss: TwoMinimaLoss, lo, hi, n) -> None:
    with pytest.raises(UserError):
        Tabulated1D.from_landscape(loss, lo, hi, n)


def test_from_landscape_rejects_multidimensional_landscapes() -> None:
    quad = QuadraticLoss(torch.eye(2, dtype=torch.float64), torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(UserError):
        Tabulated1D.from_landscape(quad, -1.0, 1.0, 11)


def test_rejects_negative_noise() -> None:
    v = torch.zeros(5, dtype=torch.float64)
    with pytest.raises(UserError):
        Tabulated1D(0.0, 1.0, v, v, v, v - 1.0)


def test_a_diverging_fused_run_ends_non_finite_instead_of_raising() -> None:
    """dt far beyond 2/L'': the chains blow up; the table lookup must not fail on NaN."""
    quad = QuadraticLoss(
        torch.eye(1, dtype=torch.float64), torch.tensor([[-1.0], [1.0]], dtype=torch.float64)
    )
    tab = Tabulated1D.from_landscape(quad, -5.0, 5.0, 101)
    traj = run_sde(
        tab,
        torch.zeros(4, 1, dtype=torch.float64),
        temperature=0.1,
        dt=5.0,
        n_steps=2000,
        generator=torch.Generator().manual_seed(0),
    )
    assert not bool(torch.isfinite(traj.final).any())
