"""Lyapunov covariances and the stationary bias against scipy, closed forms and simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import linalg

from sgdtemp.errors import UserError
from sgdtemp.theory import (
    lyapunov_continuous,
    lyapunov_discrete,
    mean_and_var,
    stationary_bias,
    stationary_density_1d,
    temperature,
)

RTOL = 1e-10
# Sample covariance of n independent draws: each entry within this many standard errors.
N_SIGMA = 5.0


def random_spd(rng: np.random.Generator, d: int, scale: float = 1.0) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return scale * (a @ a.T / d + 0.3 * np.eye(d))


@pytest.mark.parametrize("d", [1, 3, 6])
def test_continuous_matches_scipy(d: int) -> None:
    rng = np.random.default_rng(10 + d)
    H, C = random_spd(rng, d), random_spd(rng, d, 2.0)
    T = 0.07
    sigma = lyapunov_continuous(H, C, T)
    np.testing.assert_allclose(sigma, linalg.solve_continuous_lyapunov(H, T * C), rtol=RTOL)
    # trace identity: (1/2) tr(H Sigma) = (T/4) tr C
    assert 0.5 * np.trace(H @ sigma) == pytest.approx(0.25 * T * np.trace(C), rel=RTOL)


@pytest.mark.parametrize("d", [1, 3, 6])
def test_discrete_matches_scipy_sgd_recursion(d: int) -> None:
    rng = np.random.default_rng(20 + d)
    H, C = random_spd(rng, d), random_spd(rng, d, 2.0)
    batch = 8
    lr = 1.6 / np.linalg.eigvalsh(H)[-1]  # lr * lambda_max = 1.6: far from the SDE limit
    T = temperature(lr, batch)
    sigma = lyapunov_discrete(H, C, T, lr)
    # SGD recursion Sigma = (I - lr H) Sigma (I - lr H) + lr^2 C / B
    A = np.eye(d) - lr * H
    oracle = linalg.solve_discrete_lyapunov(A, lr**2 * C / batch)
    np.testing.assert_allclose(sigma, oracle, rtol=1e-9)
    # it differs from the continuous (SDE) answer at this step size
    assert not np.allclose(sigma, lyapunov_continuous(H, C, T), rtol=0.05)


def test_one_dimensional_closed_forms() -> None:
    h, c, lr, batch = 3.0, 0.7, 0.4, 4
    T = temperature(lr, batch)
    assert lyapunov_continuous(h, c, T) == pytest.approx(T * c / (2 * h), rel=1e-14)
    assert lyapunov_discrete(h, c, T, lr) == pytest.approx(
        lr * c / (batch * h * (2 - lr * h)), rel=1e-14
    )
    assert isinstance(lyapunov_continuous(h, c, T), float)
    np.testing.assert_allclose(lyapunov_continuous([[h]], [[c]], T), [[T * c / (2 * h)]])


def test_isotropic_and_fisher_special_cases() -> None:
    rng = np.random.default_rng(3)
    H = random_spd(rng, 4)
    T, s2, c = 0.05, 0.3, 1.7
    np.testing.assert_allclose(
        lyapunov_continuous(H, s2 * np.eye(4), T), 0.5 * T * s2 * np.linalg.inv(H), rtol=1e-9
    )
    np.testing.assert_allclose(
        lyapunov_continuous(H, c * H, T), 0.5 * T * c * np.eye(4), atol=1e-13
    )


def test_sgd_simulation_matches_discrete_lyapunov() -> None:
    """Seeded SGD on a quadratic with Gaussian gradient noise of covariance C / B."""
    H = np.array([[2.0, 0.5], [0.5, 1.0]])
    C = np.array([[1.0, 0.3], [0.3, 0.5]])
    lr, batch, chains, steps = 0.4, 4, 20000, 200
    T = temperature(lr, batch)
    rng = np.random.default_rng(1234)
    chol = np.linalg.cholesky(C / batch)
    theta = np.zeros((chains, 2))
    for _ in range(steps):  # |1 - lr lambda|^steps < 1e-30: the law has converged
        noise = rng.standard_normal((chains, 2)) @ chol.T
        theta = theta - lr * (theta @ H + noise)
    emp = np.cov(theta, rowvar=False)
    sigma = lyapunov_discrete(H, C, T, lr)
    # standard error of a sample covariance entry: sqrt((S_ii S_jj + S_ij^2) / n)
    se = np.sqrt((np.outer(np.diag(sigma), np.diag(sigma)) + sigma**2) / chains)
    assert np.all(np.abs(emp - sigma) < N_SIGMA * se), (emp, sigma)
    # the continuous answer is rejected by the same test
    sde = lyapunov_continuous(H, C, T)
    assert np.any(np.abs(emp - sde) > N_SIGMA * se)
    assert np.abs(theta.mean(axis=0)).max() < N_SIGMA * math.sqrt(sigma.max() / chains)


def test_unstable_learning_rate_raises() -> None:
    H = np.diag([1.0, 4.0])
    with pytest.raises(UserError, match=r"lr \* lambda_max = 2\.4"):
        lyapunov_discrete(H, np.eye(2), 0.01, 0.6)
    lyapunov_discrete(H, np.eye(2), 0.01, 0.49)  # stable


@pytest.mark.parametrize(
    "H,C,match",
    [
        (np.array([[1.0, 0.2], [0.0, 1.0]]), np.eye(2), "H must be symmetric"),
        (np.diag([1.0, -1.0]), np.eye(2), "positive definite"),
        (np.eye(2), np.eye(3), "C must have the shape"),
        (np.eye(2), np.array([[1.0, 0.2], [0.0, 1.0]]), "C must be symmetric"),
        (np.ones((2, 3)), np.eye(2), "square"),
    ],
)
def test_bad_matrices_raise(H: np.ndarray, C: np.ndarray, match: str) -> None:
    with pytest.raises(UserError, match=match):
        lyapunov_continuous(H, C, 0.1)


def test_bias_one_dimensional_formula_and_notes_check() -> None:
    # L = x^2/2 + 0.3 x^3 / 3: h = 1, L''' = 0.6, C = 1, T = 0.02 -> b = -0.003 (theory.md §2.8)
    T, h, third, c = 0.02, 1.0, 0.6, 1.0
    b = stationary_bias(h, third, lyapunov_continuous(h, c, T))
    assert b == pytest.approx(-third * T * c / (4 * h**2), rel=1e-14)
    assert b == pytest.approx(-0.003, rel=1e-12)


def test_bias_approaches_exact_density_mean_as_t_falls() -> None:
    """Relative error of b against the exact 1-D stationary mean is O(T)."""
    grid = np.linspace(-1.5, 1.5, 12001)
    errors = []
    for T in (0.04, 0.02, 0.01, 0.005):
        exact_mean, _ = mean_and_var(stationary_density_1d(grid, grid + 0.3 * grid**2, 1.0, T))
        b = stationary_bias(1.0, 0.6, lyapunov_continuous(1.0, 1.0, T))
        errors.append(abs(b - exact_mean) / abs(exact_mean))
    ratios = np.array(errors[1:]) / np.array(errors[:-1])
    assert np.all((ratios > 0.35) & (ratios < 0.65)), errors
    assert errors[-1] < 0.02, errors


def test_bias_multidimensional_against_loops_and_mean_gradient() -> None:
    rng = np.random.default_rng(7)
    d = 3
    H = random_spd(rng, d)
    # a symmetric third-derivative tensor
    a = rng.standard_normal((d, d, d))
    perms = [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
    third = sum(a.transpose(p) for p in perms) / 6
    C = random_spd(rng, d)
    sigma = lyapunov_continuous(H, C, 1e-3)
    b = stationary_bias(H, third, sigma)
    contraction = np.zeros(d)
    for i in range(d):
        for j in range(d):
            for k in range(d):
                contraction[i] += third[i, j, k] * sigma[j, k]
    np.testing.assert_allclose(b, -0.5 * np.linalg.solve(H, contraction), rtol=1e-12)

    # cubic loss L = x^T H x / 2 + T_ijk x_i x_j x_k / 6: under N(b, Sigma) the mean gradient is
    # H b + T:(Sigma + b b^T) / 2 = T:(b b^T) / 2, so relative to T:Sigma / 2 it is O(T)
    def relative_mean_gradient(temp: float) -> float:
        sig = lyapunov_continuous(H, C, temp)
        bias = stationary_bias(H, third, sig)
        grad = H @ bias + 0.5 * np.einsum("ijk,jk->i", third, sig + np.outer(bias, bias))
        return float(
            np.linalg.norm(grad) / np.linalg.norm(0.5 * np.einsum("ijk,jk->i", third, sig))
        )

    r1, r2 = relative_mean_gradient(1e-3), relative_mean_gradient(5e-4)
    assert r1 < 1e-2
    assert r2 / r1 == pytest.approx(0.5, rel=1e-6)


def test_bias_bad_shapes_raise() -> None:
    with pytest.raises(UserError, match="third must have shape"):
        stationary_bias(np.eye(2), np.zeros((2, 2)), np.eye(2))
    with pytest.raises(UserError, match="Sigma must have shape"):
        stationary_bias(np.eye(2), np.zeros((2, 2, 2)), np.eye(3))
