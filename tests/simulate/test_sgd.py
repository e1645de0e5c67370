"""Minibatch SGD: exact stationary laws on a quadratic, a slow per-chain reference, determinism."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.linalg import solve_discrete_lyapunov

from sgdtemp.errors import UserError
from sgdtemp.landscapes import (
    MixturePotential,
    QuadraticLoss,
    TwoMinimaLoss,
    sample_two_minima_data,
)
from sgdtemp.simulate import minibatch_indices, run_sgd
from sgdtemp.theory import without_replacement_factor

# Sample variance of n independent Gaussian draws: relative standard error sqrt(2/n); we allow
# N_SIGMA of them. Means: N_SIGMA standard errors sqrt(var/n).
N_SIGMA = 5.0
# Batched fused SGD vs the per-chain python reference fed the same indices.
REFERENCE_RTOL = 1e-11


def _quadratic_1d(n: int, h: float, seed: int) -> QuadraticLoss:
    xi = 1.0 + 2.0 * torch.randn(
        n, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    return QuadraticLoss(torch.tensor([[h]], dtype=torch.float64), xi)


def _population_var(loss: QuadraticLoss) -> float:
    return float(loss.noise_cov(torch.zeros(1, 1, dtype=torch.float64)))


def _stationary_start(loss: QuadraticLoss, var: float, chains: int, seed: int) -> torch.Tensor:
    """Chains started at the minimizer with the stationary variance (shortens the burn-in)."""
    z = torch.randn(chains, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return loss.minimizers() + math.sqrt(var) * z


def _check_var(samples: torch.Tensor, exact: float) -> None:
    n = samples.numel()
    rel = float(samples.var()) / exact - 1.0
    assert abs(rel) < N_SIGMA * math.sqrt(2.0 / n), f"variance off by {rel:+.3%}"


def _check_mean(samples: torch.Tensor, exact: float, var: float) -> None:
    assert abs(float(samples.mean()) - exact) < N_SIGMA * math.sqrt(var / samples.numel())


def test_with_replacement_reaches_the_exact_discrete_stationary_variance() -> None:
    n, h, lr, batch, chains = 64, 1.0, 0.1, 4, 20_000
    loss = _quadratic_1d(n, h, 0)
    v = _population_var(loss) / batch  # Var of a minibatch mean with replacement
    exact = lr**2 * v / (1 - (1 - lr * h) ** 2)
    start = torch.zeros(chains, 1, dtype=torch.float64)  # far from stationary: a real burn-in
    traj = run_sgd(
        loss,
        start,
        lr=lr,
        batch_size=batch,
        n_steps=150,
        record_every=150,
        replacement=True,
        generator=torch.Generator().manual_seed(1),
    )
    _check_var(traj.final, exact)
    _check_mean(traj.final, float(loss.minimizers()), exact)


def test_reshuffling_reaches_the_exact_epoch_end_variance() -> None:
    """Random reshuffling: batches of an epoch are disjoint, so their means are correlated.

    Per step Var = (N-B)/(N-1) C/B, between two steps of one epoch Cov = -C/(N-1), across epochs
    0. At the end of an epoch theta - theta* = sum_e a^(Ke) sum_k a^(K-1-k) (-lr eps_k), with
    a = 1 - lr h and K = N/B steps per epoch, which gives the variance below.
    """
    n, h, lr, batch, chains = 64, 1.0, 0.05, 8, 20_000
    loss = _quadratic_1d(n, h, 2)
    c = _population_var(loss)
    per_step = without_replacement_factor(n, batch) * c / batch
    cross = -c / (n - 1)
    k, a = n // batch, 1 - lr * h
    w = a ** np.arange(k - 1, -1, -1)
    exact = lr**2 * ((per_step - cross) * (w**2).sum() + cross * w.sum() ** 2) / (1 - a ** (2 * k))
    naive = lr**2 * per_step / (1 - a**2)  # what independent batches would give
    tol = N_SIGMA * math.sqrt(2.0 / chains)
    assert abs(naive / exact - 1) > 2 * tol, "the test must tell the two schemes apart"
    # The epoch-end variance obeys Var' = a^(2K) Var + Q, so a start with the exact variance stays
    # exact; 12 epochs also forget the start (a^(24K) ~ 5e-5).
    start = _stationary_start(loss, exact, chains, 30)
    traj = run_sgd(
        loss,
        start,
        lr=lr,
        batch_size=batch,
        n_steps=12 * k,
        record_every=k,
        generator=torch.Generator().manual_seed(3),
    )
    _check_var(traj.final, exact)
    _check_mean(traj.final, float(loss.minimizers()), exact)


def test_minibatch_noise_has_the_sampling_covariances() -> None:
    """Recover each step's minibatch mean from the increments and check its second moments."""
    n, h, lr, batch, chains = 40, 1.0, 0.1, 8, 20_000
    loss = _quadratic_1d(n, h, 4)
    c = _population_var(loss)
    start = torch.zeros(chains, 1, dtype=torch.float64)
    k = n // batch
    for replacement, var, cross in (
        (True, c / batch, 0.0),
        (False, without_replacement_factor(n, batch) * c / batch, -c / (n - 1)),
    ):
        traj = run_sgd(
            loss,
            start,
            lr=lr,
            batch_size=batch,
            n_steps=2 * k,
            replacement=replacement,
            generator=torch.Generator().manual_seed(5),
        )
        theta = traj.thetas[:, :, 0]  # (steps + 1, chains)
        eps = -(theta[1:] - theta[:-1]) / lr - h * theta[:-1] - float(loss.xi.mean())
        se = N_SIGMA * c / batch * math.sqrt(2.0 / chains)
        assert abs(float((eps[0] ** 2).mean()) - var) < se
        assert abs(float((eps[0] * eps[1]).mean()) - cross) < se  # same epoch
        assert abs(float((eps[0] * eps[k]).mean())) < se  # next epoch: independent


def test_momentum_reaches_the_heavy_ball_stationary_variance() -> None:
    """Discrete Lyapunov equation of the (theta, v) recursion, checked against its closed form."""
    n, h, lr, beta, batch, chains = 64, 1.0, 0.05, 0.5, 4, 20_000
    loss = _quadratic_1d(n, h, 6)
    v = _population_var(loss) / batch
    a = np.array([[1 - lr * h, -lr * beta], [h, beta]])
    b = np.array([-lr, 1.0])
    exact = solve_discrete_lyapunov(a, v * np.outer(b, b))[0, 0]
    closed = lr * v * (1 + beta) / (h * (1 - beta) * (2 * (1 + beta) - lr * h))
    assert exact == pytest.approx(closed, rel=1e-10)
    start = _stationary_start(loss, exact, chains, 31)  # v starts at 0: burn-in still needed
    traj = run_sgd(
        loss,
        start,
        lr=lr,
        batch_size=batch,
        n_steps=150,
        record_every=150,
        replacement=True,
        momentum=beta,
        generator=torch.Generator().manual_seed(7),
    )
    assert traj.time_per_step == pytest.approx(lr / (1 - beta))
    _check_var(traj.final, exact)


def _mixture_slope(u: float, pot: MixturePotential) -> float:
    """U'(u) in plain floats: responsibilities from a log-sum-exp (an independent oracle)."""
    logs = [math.log(p / w) - 0.5 * ((u - m) / w) ** 2 for m, w, p in zip(pot.m, pot.w, pot.pi)]
    top = max(logs)
    weights = [math.exp(a - top) for a in logs]
    total = sum(weights)
    return sum(r / total * (u - m) / w**2 for r, m, w in zip(weights, pot.m, pot.w))


def _reference_sgd(
    loss: TwoMinimaLoss, theta0: torch.Tensor, batches: torch.Tensor, *, lr: float, momentum: float
) -> torch.Tensor:
    """One chain at a time, one example at a time, in plain Python floats."""
    steps, chains, batch = batches.shape
    x, xi = loss.x.tolist(), loss.xi.tolist()
    out = torch.empty(steps + 1, chains, dtype=torch.float64)
    for c in range(chains):
        theta, vel = float(theta0[c, 0]), 0.0
        out[0, c] = theta
        for k in range(steps):
            g = sum(
                _mixture_slope(theta - x[i], loss.potential) + xi[i] for i in batches[k, c].tolist()
            )
            vel = momentum * vel + g / batch
            theta -= lr * vel
            out[k + 1, c] = theta
    return out


@pytest.mark.parametrize("replacement, momentum", [(False, 0.0), (True, 0.6)])
def test_batched_equals_per_chain_reference(replacement: bool, momentum: float) -> None:
    gen = torch.Generator().manual_seed(8)
    x, xi = sample_two_minima_data(50, translation_std=0.1, tilt_std=2.0, generator=gen)
    loss = TwoMinimaLoss(MixturePotential(), x, xi)
    chains, batch, steps, lr = 4, 6, 15, 0.05
    theta0 = torch.linspace(-3.0, 3.0, chains, dtype=torch.float64).unsqueeze(1)
    stream = minibatch_indices(
        50, chains, batch, replacement=replacement, generator=torch.Generator().manual_seed(9)
    )
    batches = torch.stack(list(itertools.islice(stream, steps)))
    traj = run_sgd(
        loss,
        theta0,
        lr=lr,
        batch_size=batch,
        n_steps=steps,
        replacement=replacement,
        momentum=momentum,
        generator=torch.Generator().manual_seed(9),
    )
    expected = _reference_sgd(loss, theta0, batches, lr=lr, momentum=momentum)
    torch.testing.assert_close(traj.thetas[:, :, 0], expected, rtol=REFERENCE_RTOL, atol=1e-13)


def test_same_seed_bit_identical_different_seed_different() -> None:
    gen = torch.Generator().manual_seed(10)
    x, xi = sample_two_minima_data(200, translation_std=0.02, tilt_std=8.0, generator=gen)
    loss = TwoMinimaLoss(MixturePotential(), x, xi)
    theta0 = torch.zeros(64, 1, dtype=torch.float64)

    def run(seed: int):
        return run_sgd(
            loss,
            theta0,
            lr=0.01,
            batch_size=8,
            n_steps=50,
            record_every=10,
            generator=torch.Generator().manual_seed(seed),
        )

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a.thetas, b.thetas) and torch.equal(a.final, b.final)
    assert not torch.equal(a.final, c.final)
    assert torch.equal(theta0, torch.zeros(64, 1, dtype=torch.float64)), "theta0 untouched"


def test_records_and_times() -> None:
    loss = _quadratic_1d(16, 1.0, 11)
    theta0 = torch.full((3, 1), 2.0, dtype=torch.float64)
    traj = run_sgd(
        loss,
        theta0,
        lr=0.1,
        batch_size=4,
        n_steps=25,
        record_every=10,
        generator=torch.Generator().manual_seed(0),
    )
    assert traj.steps.tolist() == [0, 10, 20] and traj.steps.dtype == torch.int64
    assert traj.thetas.shape == (3, 3, 1) and traj.final.shape == (3, 1)
    assert torch.equal(traj.thetas[0], theta0)
    torch.testing.assert_close(traj.times, torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64))
    full = run_sgd(
        loss, theta0, lr=0.1, batch_size=4, n_steps=25, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(full.thetas[10], traj.thetas[1]) and torch.equal(full.final, traj.final)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": 0.0},
        {"lr": -1.0},
        {"lr": float("nan")},
        {"batch_size": 0},
        {"batch_size": 17},
        {"batch_size": 2.0},
        {"n_steps": 0},
        {"record_every": 0},
        {"momentum": 1.0},
        {"momentum": -0.1},
    ],
)
def test_rejects_bad_settings(kwargs) -> None:
    loss = _quadratic_1d(16, 1.0, 12)
    args = {"lr": 0.1, "batch_size": 4, "n_steps": 5} | kwargs
    with pytest.raises(UserError):
        run_sgd(loss, torch.zeros(2, 1, dtype=torch.float64), generator=torch.Generator(), **args)


@pytest.mark.parametrize("theta0", [torch.zeros(2, 2), torch.zeros(2), torch.tensor([[math.inf]])])
def test_rejects_bad_theta0(theta0) -> None:
    with pytest.raises(UserError):
        run_sgd(
            _quadratic_1d(16, 1.0, 13),
            theta0,
            lr=0.1,
            batch_size=4,
            n_steps=5,
            generator=torch.Generator(),
        )
