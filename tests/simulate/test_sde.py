"""Euler–Maruyama: Ornstein–Uhlenbeck laws on quadratics, gradient flow at T = 0, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import linalg, stats

from sgdtemp.errors import UserError
from sgdtemp.landscapes import QuadraticLoss
from sgdtemp.simulate import run_sde

# KS test significance (fixed seeds, so the outcome is deterministic).
ALPHA = 1e-3
# Sample covariance entries of n draws: within this many standard errors.
N_SIGMA = 5.0


def _quadratic(h: np.ndarray, cov: np.ndarray, n: int, seed: int) -> QuadraticLoss:
    """Tilts with exactly the requested population covariance (whitened, then colored)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, h.shape[0]))
    z -= z.mean(0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.atleast_2d(np.cov(z.T, bias=True))).T)
    xi = z @ np.linalg.cholesky(cov).T + rng.standard_normal(h.shape[0])
    return QuadraticLoss(torch.tensor(h), torch.tensor(xi))


def test_ou_law_in_one_dimension() -> None:
    h, c, temp, dt, chains = 2.0, 3.0, 0.05, 0.005, 4000
    loss = _quadratic(np.array([[h]]), np.array([[c]]), 20, 0)
    start = torch.zeros(chains, 1, dtype=torch.float64)
    # t = 5: the start is forgotten (exp(-2 h t) ~ 2e-9); h dt = 0.01 keeps the EM bias ~0.5%.
    traj = run_sde(
        loss,
        start,
        temperature=temp,
        dt=dt,
        n_steps=1000,
        record_every=1000,
        generator=torch.Generator().manual_seed(1),
    )
    law = stats.norm(float(loss.minimizers()), math.sqrt(temp * c / (2 * h)))
    assert stats.kstest(traj.final[:, 0].numpy(), law.cdf).pvalue > ALPHA
    assert traj.time_per_step == dt and traj.times[-1].item() == pytest.approx(5.0)


def test_anisotropic_ou_covariance_solves_the_lyapunov_equation() -> None:
    h = np.array([[2.0, 0.6], [0.6, 0.8]])
    cov = np.array([[1.0, -0.4], [-0.4, 0.5]])
    # lambda_max dt ~ 0.023 keeps the EM bias near 1%; t = 8 forgets the start.
    temp, dt, chains = 0.1, 0.01, 3000
    loss = _quadratic(h, cov, 30, 2)
    start = loss.minimizers().expand(chains, 2).clone()
    traj = run_sde(
        loss,
        start,
        temperature=temp,
        dt=dt,
        n_steps=800,
        record_every=800,
        generator=torch.Generator().manual_seed(3),
    )
    sigma = linalg.solve_continuous_lyapunov(h, temp * cov)  # H S + S H = T C
    sample = np.cov(traj.final.numpy().T)
    se = np.sqrt((np.outer(np.diag(sigma), np.diag(sigma)) + sigma**2) / chains)
    assert np.all(np.abs(sample - sigma) < N_SIGMA * se), (sample, sigma)


def test_zero_temperature_is_gradient_descent() -> None:
    h, dt, steps = 1.5, 0.1, 30
    loss = _quadratic(np.array([[h]]), np.array([[1.0]]), 10, 4)
    start = torch.linspace(-2.0, 2.0, 5, dtype=torch.float64).unsqueeze(1)
    traj = run_sde(
        loss,
        start,
        temperature=0.0,
        dt=dt,
        n_steps=steps,
        generator=torch.Generator().manual_seed(0),
    )
    star = loss.minimizers()
    torch.testing.assert_close(
        traj.final, star + (1 - h * dt) ** steps * (start - star), rtol=1e-12, atol=1e-12
    )


def test_same_seed_bit_identical_different_seed_different() -> None:
    loss = _quadratic(np.array([[1.0, 0.2], [0.2, 1.0]]), np.eye(2), 10, 5)
    start = torch.zeros(50, 2, dtype=torch.float64)

    def run(seed: int):
        return run_sde(
            loss,
            start,
            temperature=0.1,
            dt=0.01,
            n_steps=40,
            record_every=8,
            generator=torch.Generator().manual_seed(seed),
        )

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a.thetas, b.thetas) and not torch.equal(a.final, c.final)
    assert a.steps.tolist() == [0, 8, 16, 24, 32, 40] and torch.equal(a.thetas[-1], a.final)
    assert torch.equal(start, torch.zeros(50, 2, dtype=torch.float64)), "theta0 untouched"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": -0.1},
        {"temperature": float("nan")},
        {"dt": 0.0},
        {"n_steps": 0},
        {"record_every": -1},
    ],
)
def test_rejects_bad_settings(kwargs) -> None:
    loss = _quadratic(np.array([[1.0]]), np.array([[1.0]]), 5, 6)
    args = {"temperature": 0.1, "dt": 0.01, "n_steps": 5} | kwargs
    with pytest.raises(UserError):
        run_sde(loss, torch.zeros(3, 1, dtype=torch.float64), generator=torch.Generator(), **args)


def test_rejects_theta0_of_the_wrong_dimension() -> None:
    loss = _quadratic(np.array([[1.0]]), np.array([[1.0]]), 5, 7)
    with pytest.raises(UserError):
        run_sde(
            loss,
            torch.zeros(3, 2, dtype=torch.float64),
            temperature=0.1,
            dt=0.01,
            n_steps=5,
            generator=torch.Generator(),
        )
