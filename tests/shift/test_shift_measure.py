"""The shift against exact answers: closed-form ridge regression, scipy logistic regression."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize
import torch
from torch import nn

from sgdtemp.errors import UserError
from sgdtemp.shift import measure_shift

F64 = torch.float64
THETA_ATOL = 1e-7  # eval minimum vs the independent oracle


def _ridge_solution(x, y, wd):
    a = torch.cat([x, torch.ones(x.shape[0], 1, dtype=F64)], dim=1)
    n = x.shape[0]
    h = 2 * a.T @ a / n + wd * torch.eye(a.shape[1], dtype=F64)
    return torch.linalg.solve(h, 2 * a.T @ y[:, 0] / n), h


def _regression_data(seed, n=80, d=4, shift=0.0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=F64) + shift
    w = torch.arange(1.0, d + 1, dtype=F64)
    y = (x @ w + 0.5 * torch.randn(n, generator=gen, dtype=F64))[:, None]
    return x, y


def test_ridge_regression_exact_shift_and_identities(helpers):
    wd = 0.05
    x, y = _regression_data(0)
    xe, ye = _regression_data(1, n=50, shift=0.2)
    model = nn.Linear(4, 1).double()
    theta_star, _ = _ridge_solution(x, y, wd)
    helpers.set_flat(model, theta_star)
    theta_eval, h_eval = _ridge_solution(xe, ye, wd)
    res = measure_shift(
        model,
        nn.MSELoss(),
        (x, y),
        (xe, ye),
        weight_decay=wd,
        grad_tol=1e-13,
        rel_grad_tol=0.0,
        top_k=5,
    )
    assert res.objective == "minimum" and res.method == "newton_cg" and res.mu == 0.0
    assert res.converged
    assert torch.allclose(res.eval_minimum, theta_eval, atol=THETA_ATOL)
    s = theta_star - theta_eval
    assert torch.allclose(res.shift, s, atol=THETA_ATOL)
    assert res.shift_curvature == pytest.approx(0.5 * float(s @ h_eval @ s), rel=1e-6)
    assert res.ratio == pytest.approx(1.0, abs=1e-8)  # the objective is exactly quadratic
    assert res.generalization_gap == pytest.approx(res.vertical_shift + res.measured_gap, abs=1e-12)
    # Newton shift from theta* is exact for a quadratic
    assert res.newton_converged
    assert res.newton_cosine == pytest.approx(1.0, abs=1e-8)
    assert res.newton_shift_norm == pytest.approx(res.shift_norm, rel=1e-6)
    # top_k = d: the projection carries all of s and all of the data shift-curvature
    assert res.projection is not None
    assert res.projection.norm_fraction == pytest.approx(1.0, abs=1e-8)
    assert res.projection.curvature_fraction == pytest.approx(1.0, abs=1e-8)
    assert res.train_grad_norm < 1e-10


def _logistic_oracle(x, y, wd, theta0):
    """Multinomial logistic regression + L2 minimized by scipy in float64 (independent code)."""
    xn, yn = x.numpy(), y.numpy()
    n, d = xn.shape
    k = int(yn.max()) + 1

    def fg(t):
        w, b = t[: k * d].reshape(k, d), t[k * d :]
        z = xn @ w.T + b
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        f = -np.log(p[np.arange(n), yn]).mean() + 0.5 * wd * (t @ t)
        r = p.copy()
        r[np.arange(n), yn] -= 1
        r /= n
        g = np.concatenate([(r.T @ xn).ravel(), r.sum(axis=0)]) + wd * t
        return f, g

    out = scipy.optimize.minimize(
        fg, theta0.numpy(), jac=True, method="BFGS", options={"gtol": 1e-11, "maxiter": 5000}
    )
    return torch.from_numpy(out.x)


# L-BFGS's line search compares function values, so it cannot go below ~sqrt(eps) relative
@pytest.mark.parametrize("method,rel_tol", [("newton_cg", 1e-9), ("lbfgs", 1e-7)])
def test_logistic_regression_eval_minimum_matches_scipy(helpers, method, rel_tol):
    wd = 0.02
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(90, 3, generator=gen, dtype=F64)
    y = torch.randint(0, 3, (90,), generator=gen)
    xe = torch.randn(60, 3, generator=gen, dtype=F64) * 1.2
    ye = torch.randint(0, 3, (60,), generator=gen)
    model = nn.Linear(3, 3).double()
    helpers.to_train_minimum(model, nn.CrossEntropyLoss(), x, y, wd)
    theta_star = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    oracle = _logistic_oracle(xe, ye, wd, theta_star)
    res = measure_shift(
        model,
        nn.CrossEntropyLoss(),
        (x, y),
        (xe, ye),
        weight_decay=wd,
        method=method,
        rel_grad_tol=rel_tol,
        grad_tol=1e-12,
    )
    assert res.converged and res.method == method
    assert torch.allclose(res.eval_minimum, oracle, atol=1e-6)
    assert res.train_grad_norm < 1e-9
    assert res.grad_norm_at_eval_min <= rel_tol * res.initial_grad_norm + 1e-12
    assert res.generalization_gap == pytest.approx(res.vertical_shift + res.measured_gap, abs=1e-12)


def test_quadratic_picture_holds_as_the_shift_shrinks(helpers):
    """Measured gap / shift-curvature -> 1 as the eval set approaches the train set.

    (At larger perturbations of this data, eps >= 0.1, the eval minimum lies in another basin:
    the ratio drops to 0.3 and the Newton shift points elsewhere, cosine 0.7.)
    """
    wd = 1e-2
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(60, 3, generator=gen, dtype=F64)
    y = torch.randint(0, 2, (60,), generator=gen)
    direction = torch.randn(60, 3, generator=gen, dtype=F64)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2)).double()
    helpers.to_train_minimum(model, nn.CrossEntropyLoss(), x, y, wd)
    errors, norms = [], []
    for eps in (0.04, 0.02, 0.01):
        res = measure_shift(
            model,
            nn.CrossEntropyLoss(),
            (x, y),
            (x + eps * direction, y),
            weight_decay=wd,
            rel_grad_tol=1e-10,
        )
        assert res.converged
        errors.append(abs(res.ratio - 1.0))
        norms.append(res.shift_norm)
    assert norms[0] > norms[1] > norms[2]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.02
    assert res.newton_cosine > 0.999
    # the error is first order in the shift: ratio error / |s| stays bounded
    assert errors[2] / norms[2] < 2 * errors[0] / norms[0]


def test_proximal_shift_on_separable_data():
    """No weight decay, separable data: cross-entropy has no finite minimum; proximal is used."""
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(40, 2, generator=gen, dtype=F64)
    y = (x[:, 0] > 0).long()
    model = nn.Linear(2, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-3.0, 0.0], [3.0, 0.0]], dtype=F64))
        model.bias.zero_()
    xe = x + 0.3 * torch.randn(40, 2, generator=gen, dtype=F64)
    res = measure_shift(model, nn.CrossEntropyLoss(), (x, y), (xe, y), rel_grad_tol=1e-10)
    assert res.objective == "proximal" and res.mu > 0 and res.weight_decay == 0.0
    assert res.converged and math.isfinite(res.ratio)
    # stationarity of the proximal objective: grad L~(theta~) = -mu (theta~ - theta*) = mu s
    from sgdtemp.curvature import ModelLoss

    _, g = ModelLoss(model, nn.CrossEntropyLoss(), (xe, y)).value_and_grad(res.eval_minimum)
    assert torch.allclose(g, res.mu * res.shift, atol=1e-8)
    explicit = measure_shift(
        model, nn.CrossEntropyLoss(), (x, y), (xe, y), mu=2 * res.mu, rel_grad_tol=1e-10
    )
    assert explicit.mu == 2 * res.mu and explicit.shift_norm < res.shift_norm


def test_the_model_is_not_modified():
    x, y = _regression_data(0, n=20)
    model = nn.Linear(4, 1).double()
    before = [p.detach().clone() for p in model.parameters()]
    measure_shift(model, nn.MSELoss(), (x, y), (x + 0.1, y), weight_decay=0.1)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_bad_options_are_user_errors():
    x, y = _regression_data(0, n=10)
    model = nn.Linear(4, 1).double()
    data = (x, y)
    with pytest.raises(UserError, match="objective"):
        measure_shift(model, nn.MSELoss(), data, data, objective="exact")
    with pytest.raises(UserError, match="method"):
        measure_shift(model, nn.MSELoss(), data, data, method="sgd")
    with pytest.raises(UserError, match="weight_decay"):
        measure_shift(model, nn.MSELoss(), data, data, weight_decay=-1.0)
    with pytest.raises(UserError, match="top_k"):
        measure_shift(model, nn.MSELoss(), data, data, weight_decay=0.1, top_k=6)
    with pytest.raises(UserError, match="mu"):
        measure_shift(model, nn.MSELoss(), data, data, mu=0.0)


def test_time_limit_stops_unconverged_and_reports_the_point_reached(helpers):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(40, 3, generator=gen, dtype=F64)
    y = torch.randint(0, 3, (40,), generator=gen)
    model = nn.Linear(3, 3).double()
    seen = []
    for method in ("newton_cg", "lbfgs"):
        res = measure_shift(
            model,
            nn.CrossEntropyLoss(),
            (x, y),
            (x + 1.0, y),
            weight_decay=1e-3,
            method=method,
            max_seconds=0.0,
            rel_grad_tol=1e-12,
            callback=lambda i, f, g: seen.append((i, f, g)),
        )
        assert not res.converged and res.message == "time limit"
        assert math.isfinite(res.measured_gap) and math.isfinite(res.shift_norm)
    assert seen  # the callback ran


def test_callback_reports_every_iteration():
    x, y = _regression_data(0, n=30)
    model = nn.Linear(4, 1).double()
    seen = []
    res = measure_shift(
        model,
        nn.MSELoss(),
        (x, y),
        (x + 0.2, y),
        weight_decay=0.1,
        callback=lambda i, f, g: seen.append((i, f, g)),
    )
    assert res.converged and len(seen) == res.iterations
    assert all(b[1] <= a[1] + 1e-12 for a, b in zip(seen, seen[1:]))  # monotone objective
