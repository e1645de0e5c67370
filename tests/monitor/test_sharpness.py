"""lambda_max of the Hessian SGD follows, against a dense torch.func Hessian."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, jacrev

from sgdtemp.curvature import ModelLoss
from sgdtemp.monitor import measure_sharpness
from tests.monitor.conftest import make_problem

N = 64


def _dense_hessian(model, x, y):
    """The probe loss's Hessian by torch.func (reverse over reverse) of the flat parameters."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(flat):
        parts = torch.split(flat, [s.numel() for s in shapes])
        params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes)}
        return F.cross_entropy(functional_call(model, params, (x,)), y)

    return jacrev(jacrev(loss))(theta), theta


@pytest.fixture(scope="module")
def setup():
    model, x, y = make_problem(N)
    h, theta = _dense_hessian(model, x, y)
    return model, x, y, h, theta


def test_lambda_max_matches_the_dense_hessian(setup):
    model, x, y, h, theta = setup
    d = theta.numel()
    top = float(torch.linalg.eigvalsh(h)[-1])
    ml = ModelLoss(model, F.cross_entropy, (x, y))
    gen = torch.Generator().manual_seed(0)
    res = measure_sharpness(
        ml,
        theta,
        lr=torch.full((d,), 0.1, dtype=torch.float64),
        weight_decay=torch.full((d,), 1e-3, dtype=torch.float64),
        max_iters=d,
        tol=1e-10,
        generator=gen,
    )
    assert res.converged
    assert res.lambda_max == pytest.approx(top + 1e-3, rel=1e-9)
    assert res.lr_lambda_max == pytest.approx(0.1 * (top + 1e-3), rel=1e-9)
    # the monitor's default tolerance: the error stays within the stated residual bound
    quick = measure_sharpness(
        ml,
        theta,
        lr=torch.full((d,), 0.1, dtype=torch.float64),
        weight_decay=torch.zeros(d, dtype=torch.float64),
        generator=torch.Generator().manual_seed(1),
    )
    assert abs(quick.lr_lambda_max - 0.1 * top) <= quick.residual + 1e-12
    assert quick.lr_lambda_max <= 0.1 * top * (1 + 1e-12)  # a Ritz value never exceeds it


def test_per_group_lr_and_decay_scale_the_hessian(setup):
    model, x, y, h, theta = setup
    d = theta.numel()
    lr = torch.where(torch.arange(d) < 56, 0.1, 0.02).double()  # first layer faster
    decay = torch.where(torch.arange(d) % 2 == 0, 5e-3, 0.0).double()
    root = lr.sqrt()
    scaled = root[:, None] * (h + torch.diag(decay)) * root[None, :]
    res = measure_sharpness(
        ModelLoss(model, F.cross_entropy, (x, y)),
        theta,
        lr=lr,
        weight_decay=decay,
        max_iters=d,
        tol=1e-10,
        generator=torch.Generator().manual_seed(0),
    )
    assert res.lr_lambda_max == pytest.approx(float(torch.linalg.eigvalsh(scaled)[-1]), rel=1e-9)
    assert res.lambda_max is None  # no single lr: only the scaled value is one number
    one_lr = measure_sharpness(
        ModelLoss(model, F.cross_entropy, (x, y)),
        theta,
        lr=torch.full((d,), 0.1, dtype=torch.float64),
        weight_decay=decay,
        max_iters=d,
        tol=1e-10,
        generator=torch.Generator().manual_seed(0),
    )
    top = float(torch.linalg.eigvalsh(h + torch.diag(decay))[-1])
    assert one_lr.lambda_max == pytest.approx(top, rel=1e-9)


def test_warm_start_from_the_previous_probe(setup):
    model, x, y, h, theta = setup
    d = theta.numel()
    ml = ModelLoss(model, F.cross_entropy, (x, y))
    lr, decay = torch.full((d,), 0.1, dtype=torch.float64), torch.zeros(d, dtype=torch.float64)
    first = measure_sharpness(ml, theta, lr=lr, weight_decay=decay, tol=1e-6, max_iters=d)
    moved = theta + 1e-3 * torch.randn(d, generator=torch.Generator().manual_seed(3)).double()
    h_moved, _ = _dense_hessian_at(model, x, y, moved)
    truth = 0.1 * float(torch.linalg.eigvalsh(h_moved)[-1])
    warm = measure_sharpness(
        ml, moved, lr=lr, weight_decay=decay, tol=1e-6, max_iters=d, v0=first.vector
    )
    cold = measure_sharpness(ml, moved, lr=lr, weight_decay=decay, tol=1e-6, max_iters=d)
    assert warm.converged and warm.lr_lambda_max == pytest.approx(truth, rel=1e-6)
    assert warm.num_matvecs < cold.num_matvecs


def _dense_hessian_at(model, x, y, theta):
    import copy

    moved = copy.deepcopy(model)
    torch.nn.utils.vector_to_parameters(theta, moved.parameters())
    return _dense_hessian(moved, x, y)
