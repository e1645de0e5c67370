"""The three mechanisms against closed forms (ridge regression) and the remainder (logistic).

For a linear model with squared loss, F and F~ are exactly quadratic: both minima, H~ and every
term of theory.md §1.7 have dense closed forms, and the five terms plus the sampling term equal
the measured mean_j F~(theta_j) - F(theta*) up to rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sgdtemp.errors import UserError
from sgdtemp.shift import TERMS, ShiftOptions, measure_mechanisms

F64 = torch.float64
WD = 0.05
TIGHT = ShiftOptions(weight_decay=WD, grad_tol=1e-13, rel_grad_tol=0.0)
RTOL = 1e-8  # terms vs closed forms (descents converge to |grad| < 1e-13)


def _data(seed, n, shift=0.0, d=4):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=F64) + shift
    w = torch.arange(1.0, d + 1, dtype=F64)
    y = (x @ w + 0.5 * torch.randn(n, generator=gen, dtype=F64))[:, None]
    return x, y


def _ridge(x, y):
    """F = mean((a^T theta - y)^2) + WD/2 |theta|^2, a = [x, 1]: (minimum, Hessian, F)."""
    a = torch.cat([x, torch.ones(x.shape[0], 1, dtype=F64)], dim=1)
    n = x.shape[0]
    h = 2 * a.T @ a / n + WD * torch.eye(a.shape[1], dtype=F64)
    theta = torch.linalg.solve(h, 2 * a.T @ y[:, 0] / n)

    def objective(t):
        return float(((a @ t - y[:, 0]) ** 2).mean()) + 0.5 * WD * float(t @ t)

    return theta, h, objective


@pytest.mark.parametrize("own_mean", [True, False])
def test_every_term_matches_its_closed_form_on_ridge_regression(own_mean):
    x, y = _data(0, 80)
    evals = {"heldout": _data(1, 50), "shifted": _data(2, 60, shift=0.3)}
    theta_star, _, train_f = _ridge(x, y)
    gen = torch.Generator().manual_seed(3)
    iterates = theta_star + 0.2 + 0.3 * torch.randn(24, 5, generator=gen, dtype=F64)
    mean = iterates.mean(0) if own_mean else iterates.mean(0) + 0.05
    res = measure_mechanisms(
        nn.Linear(4, 1).double(), nn.MSELoss(), (x, y), evals, mean, iterates, TIGHT
    )

    assert res.converged and res.all_converged and res.n_iterates == 24
    assert torch.allclose(res.train_minimum, theta_star, atol=1e-10)
    b = mean - theta_star
    assert torch.allclose(res.bias, b, atol=1e-10)
    assert res.train_objective == pytest.approx(train_f(theta_star), rel=1e-12)
    assert res.train_loss == pytest.approx(
        train_f(theta_star) - 0.5 * WD * float(theta_star @ theta_star)
    )
    deltas = iterates - mean
    assert res.spread == pytest.approx(float((deltas**2).sum(1).mean()) ** 0.5, rel=1e-12)
    assert res.train_objective_mean == pytest.approx(
        np.mean([train_f(t) for t in iterates]), rel=1e-12
    )
    for name, (xe, ye) in evals.items():
        m = res.evals[name]
        theta_eval, h_eval, eval_f = _ridge(xe, ye)
        s = theta_star - theta_eval
        assert torch.allclose(m.eval_minimum, theta_eval, atol=1e-10)
        assert torch.allclose(m.shift, s, atol=1e-10)
        expected = {
            "vertical": eval_f(theta_eval) - train_f(theta_star),
            "shift_curvature": 0.5 * float(s @ h_eval @ s),
            "cross": float(s @ h_eval @ b),
            "bias_curvature": 0.5 * float(b @ h_eval @ b),
            "covariance_curvature": 0.5
            * float(torch.einsum("ji,ik,jk->j", deltas, h_eval, deltas).mean()),
        }
        for term in TERMS:
            assert getattr(m, term) == pytest.approx(expected[term], rel=RTOL, abs=1e-12), term
        forms = 0.5 * torch.einsum("ji,ik,jk->j", deltas, h_eval, deltas)
        assert m.covariance_curvature_se == pytest.approx(float(forms.std() / 24**0.5), rel=1e-8)
        measured = np.array([eval_f(t) for t in iterates]) - train_f(theta_star)
        assert m.measured == pytest.approx(measured.mean(), rel=1e-12)
        assert m.measured_se == pytest.approx(measured.std(ddof=1) / 24**0.5, rel=1e-8)
        sampling = float(deltas.mean(0) @ h_eval @ (s + b))
        assert m.sampling_term == pytest.approx(sampling, rel=RTOL, abs=1e-13)
        if own_mean:
            assert abs(m.sampling_term) < 1e-13
        else:
            assert abs(m.sampling_term) > 1e-3
        # quadratic objective: measured = five terms + sampling term, up to rounding
        assert m.total == pytest.approx(sum(expected.values()), rel=RTOL)
        assert m.measured == pytest.approx(m.total + m.sampling_term, rel=1e-9)
        assert abs(m.remainder) < 1e-9 * abs(m.measured)
        # data losses and the weight-decay shares
        eval_loss = ((xe @ theta_eval[:4] + theta_eval[4] - ye[:, 0]) ** 2).mean()
        assert m.eval_loss_at_eval_min == pytest.approx(float(eval_loss), rel=1e-10)
        assert m.eval_objective_at_eval_min == pytest.approx(eval_f(theta_eval), rel=1e-12)
        reg = 0.5 * WD * (iterates**2).sum(1)
        assert m.eval_loss_mean == pytest.approx(
            float(measured.mean() + train_f(theta_star) - reg.mean())
        )
        assert m.weight_decay_shares["shift_curvature"] == pytest.approx(0.5 * WD * float(s @ s))
        assert m.weight_decay_shares["cross"] == pytest.approx(WD * float(s @ b))
        summary = m.summary()
        assert summary["sum"] == m.total and "shift" not in summary
    assert set(res.summary()["evals"]) == set(evals)


def _logistic_case(eps):
    """Logistic regression near its train minimum; eval data shifted by eps, iterates spread eps."""
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(120, 3, generator=gen, dtype=F64)
    y = (
        x @ torch.tensor([1.5, -1.0, 0.5], dtype=F64)
        + 0.5 * torch.randn(120, generator=gen, dtype=F64)
        > 0
    ).long()
    direction = torch.randn(120, 3, generator=gen, dtype=F64)
    model = nn.Linear(3, 2).double()
    loss = nn.CrossEntropyLoss()
    base = measure_mechanisms(
        model,
        loss,
        (x, y),
        {"train": (x, y)},
        torch.zeros(8, dtype=F64),
        torch.zeros(1, 8, dtype=F64),
        TIGHT,
    )
    theta_star = base.train_minimum
    noise = torch.randn(16, 8, generator=gen, dtype=F64)
    iterates = theta_star + eps * (0.5 + noise)
    res = measure_mechanisms(
        model,
        loss,
        (x, y),
        {"shifted": (x + eps * direction, y)},
        iterates.mean(0),
        iterates,
        TIGHT,
    )
    return res.evals["shifted"], res


def test_remainder_shrinks_faster_than_the_terms_on_logistic_regression():
    # cross-entropy is not quadratic: the five terms account for the measured expectation up to
    # cubic terms, so relative to the curvature terms (order eps^2) the remainder shrinks with eps
    relative = []
    for eps in (0.1, 0.05):
        m, res = _logistic_case(eps)
        assert res.all_converged
        assert abs(m.sampling_term) < 1e-12  # the mean is the iterates' own mean
        curvature = m.total - m.vertical
        assert curvature > 0 and m.vertical > 0
        relative.append(abs(m.remainder) / curvature)
    assert relative[0] < 0.01  # measured 0.5 %
    assert relative[1] < relative[0] / 2  # measured 0.07 %: 7x smaller at half the spread


def test_errors():
    x, y = _data(0, 20)
    model = nn.Linear(4, 1).double()
    mean, its = torch.zeros(5, dtype=F64), torch.zeros(3, 5, dtype=F64)
    with pytest.raises(UserError, match="weight_decay > 0"):
        measure_mechanisms(model, nn.MSELoss(), (x, y), {"t": (x, y)}, mean, its)
    with pytest.raises(UserError, match="proximal"):
        measure_mechanisms(
            model, nn.MSELoss(), (x, y), {"t": (x, y)}, mean, its, TIGHT, objective="proximal"
        )
    with pytest.raises(UserError, match="at least one eval set"):
        measure_mechanisms(model, nn.MSELoss(), (x, y), {}, mean, its, TIGHT)
    with pytest.raises(UserError, match=r"mean must be \(5,\)"):
        measure_mechanisms(
            model, nn.MSELoss(), (x, y), {"t": (x, y)}, mean, torch.zeros(3, 4), TIGHT
        )
