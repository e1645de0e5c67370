"""Laplace basin weights and the crossover temperature against quadrature and root finding."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from numpy.polynomial import Polynomial
from scipy import integrate, optimize

from sgdtemp.errors import UserError
from sgdtemp.theory import crossover_temperature, laplace_basin_weights, laplace_log_weights

# Deep sharp minimum s and shallow wide minimum w of L = min(quadratic_s, quadratic_w) (1-D).
DEPTH_S, H_S, M_S = 0.0, 8.0, -1.0
DEPTH_W, H_W, M_W = 0.05, 1.0, 1.5
SIGMA2 = 1.0


def quad_s(x: float) -> float:
    return DEPTH_S + 0.5 * H_S * (x - M_S) ** 2


def quad_w(x: float) -> float:
    return DEPTH_W + 0.5 * H_W * (x - M_W) ** 2


def exact_gibbs_weights(T: float) -> np.ndarray:
    """Basin masses of exp(-2 L / (T sigma^2)) by quadrature, split where the quadratics meet."""
    x_star = optimize.brentq(lambda x: quad_s(x) - quad_w(x), M_S, M_W)
    beta = 2.0 / (T * SIGMA2)
    kw = {"epsabs": 0.0, "epsrel": 1e-12, "limit": 200}
    p_s = integrate.quad(lambda x: math.exp(-beta * quad_s(x)), -np.inf, x_star, **kw)[0]
    p_w = integrate.quad(lambda x: math.exp(-beta * quad_w(x)), x_star, np.inf, **kw)[0]
    return np.array([p_s, p_w]) / (p_s + p_w)


def test_two_quadratic_well_is_exact_up_to_tails() -> None:
    """Each basin is exactly quadratic: only the Gaussian tails beyond the boundary are missed."""
    errors = []
    for T in (2.0, 1.0, 0.5, 0.2):
        w = laplace_basin_weights([DEPTH_S, DEPTH_W], [H_S, H_W], T, SIGMA2)
        assert w.sum() == pytest.approx(1.0, abs=1e-15)
        errors.append(np.max(np.abs(w - exact_gibbs_weights(T))))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[0] > 1e-4, errors  # the check has teeth: tails matter at high T
    assert errors[-1] < 1e-6, errors


# A smooth asymmetric double well, L = (x^2 - 1)^2 (x + 3) / 8 + 0.02 x on [-2.4, 3]: curvatures
# about 2 and 3.9, so the Laplace log odds carry an O(T) error from the cubic and quartic terms.
SMOOTH = Polynomial([-1.0, 0.0, 1.0]) ** 2 * Polynomial([3.0, 1.0]) / 8 + Polynomial([0.0, 0.02])
# Ratio of consecutive log-odds errors when T halves (first order: 1/2).
FIRST_ORDER_BAND = (0.4, 0.6)


def test_smooth_well_log_odds_error_is_first_order_in_t() -> None:
    _, left, barrier, right = np.sort(SMOOTH.deriv().roots().real)
    depths = [SMOOTH(left), SMOOTH(right)]
    curvatures = [SMOOTH.deriv(2)(left), SMOOTH.deriv(2)(right)]
    errors = []
    temperatures = (0.1, 0.05, 0.025, 0.0125)
    for T in temperatures:
        log_w = laplace_log_weights(depths, curvatures, T, SIGMA2)
        beta = 2.0 / (T * SIGMA2)
        kw = {"epsabs": 0.0, "epsrel": 1e-12, "limit": 200}
        p_l = integrate.quad(
            lambda x, beta=beta: math.exp(-beta * (SMOOTH(x) - depths[0])), -2.4, barrier, **kw
        )
        p_r = integrate.quad(
            lambda x, beta=beta: math.exp(-beta * (SMOOTH(x) - depths[0])), barrier, 3.0, **kw
        )
        errors.append(abs((log_w[0] - log_w[1]) - math.log(p_l[0] / p_r[0])))
    ratios = np.array(errors[1:]) / np.array(errors[:-1])
    assert np.all((ratios > FIRST_ORDER_BAND[0]) & (ratios < FIRST_ORDER_BAND[1])), errors
    assert errors[-1] < 0.1 * temperatures[-1], errors


def test_two_dimensional_weights_against_grid_quadrature() -> None:
    """L = min_k (L_k + (x - m_k)^T H_k (x - m_k) / 2) with non-diagonal Hessians."""
    depths = np.array([0.0, 0.02])
    centers = np.array([[-1.0, 0.0], [1.2, 0.3]])
    hessians = np.array([[[6.0, 1.5], [1.5, 3.0]], [[1.0, -0.2], [-0.2, 0.8]]])
    T = 0.04
    x = np.linspace(-3.0, 4.0, 701)
    y = np.linspace(-3.0, 3.5, 651)
    X, Y = np.meshgrid(x, y, indexing="ij")
    pts = np.stack((X, Y), axis=-1)
    quads = []
    for L, m, H in zip(depths, centers, hessians):
        u = pts - m
        quads.append(L + 0.5 * np.einsum("...i,ij,...j->...", u, H, u))
    quads_arr = np.stack(quads)
    owner = np.argmin(quads_arr, axis=0)
    gibbs = np.exp(-2.0 * quads_arr.min(axis=0) / (T * SIGMA2))
    masses = [integrate.trapezoid(integrate.trapezoid(gibbs * (owner == k), y), x) for k in (0, 1)]
    exact = np.array(masses) / sum(masses)
    w = laplace_basin_weights(depths, hessians, T, SIGMA2)
    # basin-indicator cut-off on a 0.01 grid limits the quadrature to ~1e-3
    np.testing.assert_allclose(w, exact, atol=3e-3)
    assert abs(w[0] - 0.5) > 0.1  # the case is not trivially balanced


def test_low_temperature_does_not_underflow() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w = laplace_basin_weights([1.0, 1.001, 5.0], [2.0, 3.0, 1.0], 1e-9, 0.1)
        log_w = laplace_log_weights([1.0, 1.001, 5.0], [2.0, 3.0, 1.0], 1e-9, 0.1)
    np.testing.assert_array_equal(w, [1.0, 0.0, 0.0])
    assert np.all(np.isfinite(log_w))
    assert log_w[1] == pytest.approx(-2 * 0.001 / 1e-10 - 0.5 * math.log(3 / 2), rel=1e-12)


def test_one_dimensional_shapes_agree() -> None:
    a = laplace_basin_weights([0.0, 0.1], [2.0, 0.5], 0.3, 2.0)
    b = laplace_basin_weights([0.0, 0.1], np.array([2.0, 0.5]).reshape(2, 1, 1), 0.3, 2.0)
    np.testing.assert_array_equal(a, b)


def test_crossover_matches_root_of_weight_difference() -> None:
    T_c = crossover_temperature(DEPTH_S, DEPTH_W, H_S, H_W, SIGMA2)

    def gap(T: float) -> float:
        log_w = laplace_log_weights([DEPTH_S, DEPTH_W], [H_S, H_W], T, SIGMA2)
        return float(log_w[0] - log_w[1])

    root = optimize.brentq(gap, 1e-3, 10.0, xtol=1e-14, rtol=1e-14)
    assert T_c == pytest.approx(root, rel=1e-10)
    assert T_c == pytest.approx(4 * (DEPTH_W - DEPTH_S) / (SIGMA2 * math.log(H_S / H_W)))
    # below T_c the deep sharp minimum wins, above it the wide one
    assert gap(0.5 * T_c) > 0 > gap(2.0 * T_c)
    # symmetric in the labels
    assert crossover_temperature(DEPTH_W, DEPTH_S, H_W, H_S, SIGMA2) == pytest.approx(T_c)


@pytest.mark.parametrize(
    "depth_a,depth_b,det_a,det_b",
    [
        (0.0, 0.1, 1.0, 2.0),  # a deeper and wider: a wins at every T
        (0.0, 0.0, 1.0, 2.0),  # equal depth: the wider wins at every T > 0
        (0.0, 0.1, 2.0, 2.0),  # equal curvature: the deeper wins at every T
    ],
)
def test_no_crossover_returns_inf(
    depth_a: float, depth_b: float, det_a: float, det_b: float
) -> None:
    assert crossover_temperature(depth_a, depth_b, det_a, det_b, 1.0) == math.inf
    for T in (1e-3, 1.0, 1e3):
        log_w = laplace_log_weights([depth_a, depth_b], [det_a, det_b], T, 1.0)
        assert log_w[0] > log_w[1]


def test_bad_input_raises_user_error() -> None:
    with pytest.raises(UserError, match="equal at every T"):
        crossover_temperature(0.0, 0.0, 1.0, 1.0, 1.0)
    with pytest.raises(UserError, match="det_h_b"):
        crossover_temperature(0.0, 0.1, 1.0, -1.0, 1.0)
    with pytest.raises(UserError, match="positive definite"):
        laplace_basin_weights([0.0, 0.1], [1.0, -1.0], 0.1, 1.0)
    with pytest.raises(UserError, match="symmetric"):
        laplace_basin_weights([0.0], [[[1.0, 0.5], [0.0, 1.0]]], 0.1, 1.0)
    with pytest.raises(UserError, match="hessians must have shape"):
        laplace_basin_weights([0.0, 0.1], [1.0, 2.0, 3.0], 0.1, 1.0)
    with pytest.raises(UserError, match="noise_var"):
        laplace_basin_weights([0.0, 0.1], [1.0, 2.0], 0.1, 0.0)
