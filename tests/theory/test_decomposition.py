"""Test-loss decomposition: exact for quadratic test losses, third order otherwise."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from sgdtemp.errors import UserError
from sgdtemp.theory import ShiftDecomposition, decompose_test_loss, mix_decompositions

N_SIGMA = 5.0  # Monte Carlo tolerance in standard errors


def quadratic_case(rng: np.random.Generator, d: int) -> dict:
    a = rng.standard_normal((d, d))
    b = rng.standard_normal((d, d))
    return {
        "train_min": rng.standard_normal(d),
        "test_min": rng.standard_normal(d),
        "test_hessian": a @ a.T + 0.5 * np.eye(d),
        "mean": rng.standard_normal(d),
        "cov": 0.3 * b @ b.T,
        "train_depth": 0.4,
        "test_depth": 0.7,
    }


@pytest.mark.parametrize("d", [1, 4])
def test_quadratic_test_loss_is_exact(d: int) -> None:
    rng = np.random.default_rng(d)
    case = quadratic_case(rng, d)
    dec = decompose_test_loss(**case)
    mu, sigma, H = case["mean"], case["cov"], case["test_hessian"]
    u = mu - case["test_min"]
    # E[L~] of N(mu, Sigma) for L~ = L~* + (x - x~*)^T H (x - x~*) / 2, written directly
    exact = case["test_depth"] + 0.5 * u @ H @ u + 0.5 * np.trace(H @ sigma)
    assert dec.predicted_test_loss == pytest.approx(exact, rel=1e-12)
    np.testing.assert_allclose(dec.shift, case["train_min"] - case["test_min"])
    np.testing.assert_allclose(dec.bias, mu - case["train_min"])
    assert dec.vertical == pytest.approx(0.3)
    parts = dec.test_depth + dec.shift_curvature + dec.cross + dec.bias_curvature
    assert dec.predicted_test_loss == pytest.approx(parts + dec.covariance_curvature, rel=1e-14)
    assert dec.predicted_test_loss == pytest.approx(
        dec.train_depth + dec.vertical + parts - dec.test_depth + dec.covariance_curvature
    )

    # Monte Carlo: sample the Gaussian law and average the test loss
    n = 200_000
    x = rng.multivariate_normal(mu, sigma, size=n)
    v = x - case["test_min"]
    losses = case["test_depth"] + 0.5 * np.einsum("ni,ij,nj->n", v, H, v)
    se = losses.std() / math.sqrt(n)
    assert abs(losses.mean() - dec.predicted_test_loss) < N_SIGMA * se


def test_scalar_inputs_give_float_vectors() -> None:
    dec = decompose_test_loss(
        train_min=1.0,
        test_min=0.5,
        test_hessian=2.0,
        mean=1.2,
        cov=0.01,
        train_depth=0.0,
        test_depth=0.1,
    )
    assert isinstance(dec.shift, float) and isinstance(dec.bias, float)
    assert dec.shift == pytest.approx(0.5) and dec.bias == pytest.approx(0.2)
    assert dec.shift_curvature == pytest.approx(0.25)
    assert dec.cross == pytest.approx(0.2)
    assert dec.bias_curvature == pytest.approx(0.04)
    assert dec.covariance_curvature == pytest.approx(0.01)


# A non-quadratic test loss with its minimum at 0: L~(u) = u^2/2 + 0.4 u^3/3 + 0.2 u^4.
def nonquadratic(u: float) -> float:
    return 0.5 * u**2 + 0.4 * u**3 / 3 + 0.2 * u**4


def gaussian_expectation(f, mean: float, var: float) -> float:
    sd = math.sqrt(var)
    pdf = lambda x: math.exp(-0.5 * ((x - mean) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))  # noqa: E731
    return integrate.quad(
        lambda x: f(x) * pdf(x), mean - 12 * sd, mean + 12 * sd, epsabs=0, epsrel=1e-12
    )[0]


def test_nonquadratic_error_is_third_order() -> None:
    """Scaling s, b by eps and Sigma by eps^2 shrinks the error like eps^3."""
    errors = []
    for eps in (0.1, 0.05, 0.025, 0.0125):
        s, b, var = 1.0 * eps, 0.5 * eps, 0.8 * eps**2
        dec = decompose_test_loss(
            train_min=s,
            test_min=0.0,
            test_hessian=1.0,
            mean=s + b,
            cov=var,
            train_depth=0.0,
            test_depth=0.0,
        )
        errors.append(abs(dec.predicted_test_loss - gaussian_expectation(nonquadratic, s + b, var)))
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    assert np.all((ratios > 7.0) & (ratios < 10.0)), errors  # 8 = 2^3; 4 or 16 would fail


def test_mix_weights_every_field() -> None:
    rng = np.random.default_rng(5)
    decs = [decompose_test_loss(**quadratic_case(rng, 3)) for _ in range(3)]
    p = np.array([0.2, 0.5, 0.3])
    mix = mix_decompositions(decs, p)
    assert isinstance(mix, ShiftDecomposition)
    for field in (
        "vertical",
        "shift_curvature",
        "cross",
        "bias_curvature",
        "covariance_curvature",
        "predicted_test_loss",
        "train_depth",
        "test_depth",
    ):
        expected = sum(pk * getattr(dk, field) for pk, dk in zip(p, decs))
        assert getattr(mix, field) == pytest.approx(expected, rel=1e-14)
    np.testing.assert_allclose(mix.shift, sum(pk * dk.shift for pk, dk in zip(p, decs)))
    np.testing.assert_allclose(mix.bias, sum(pk * dk.bias for pk, dk in zip(p, decs)))


def test_mix_scalar_and_errors() -> None:
    one = decompose_test_loss(
        train_min=0.0,
        test_min=0.1,
        test_hessian=1.0,
        mean=0.0,
        cov=0.0,
        train_depth=0.0,
        test_depth=0.0,
    )
    mix = mix_decompositions([one, one], [0.5, 0.5])
    assert isinstance(mix.shift, float) and mix.shift == pytest.approx(-0.1)
    with pytest.raises(UserError, match="sum to 1"):
        mix_decompositions([one, one], [0.5, 0.6])
    with pytest.raises(UserError, match="non-negative"):
        mix_decompositions([one, one], [1.5, -0.5])
    with pytest.raises(UserError, match="shape"):
        mix_decompositions([one, one], [1.0])
    with pytest.raises(UserError, match="at least one"):
        mix_decompositions([], [])
    two = decompose_test_loss(**quadratic_case(np.random.default_rng(0), 2))
    with pytest.raises(UserError, match="dimensions"):
        mix_decompositions([one, two], [0.5, 0.5])


@pytest.mark.parametrize(
    "change,match",
    [
        ({"test_min": np.zeros(3)}, "test_min must have shape"),
        ({"mean": np.zeros((2, 2))}, "mean must be"),
        ({"test_hessian": np.eye(3)}, "test_hessian must have shape"),
        ({"cov": np.eye(3)}, "cov must have shape"),
        ({"train_depth": math.nan}, "train_depth"),
        ({"train_min": np.array([np.inf, 0.0])}, "train_min must be finite"),
    ],
)
def test_bad_input_raises(change: dict, match: str) -> None:
    case = quadratic_case(np.random.default_rng(0), 2)
    case.update(change)
    with pytest.raises(UserError, match=match):
        decompose_test_loss(**case)
