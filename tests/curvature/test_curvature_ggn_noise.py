"""GGN against dense J^T H_out J, gradient covariance against a slow per-example loop."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian, jacrev

from sgdtemp.curvature import (
    GGNOperator,
    GradientCovarianceOperator,
    HessianOperator,
    noise_curvature_alignment,
    top_eigenvalues,
)
from sgdtemp.curvature.lanczos import Eigenpairs

ATOL = 1e-10
LOSS = nn.CrossEntropyLoss()
Z_TOL = 4.0


def _dense_ggn(model, x, y, helpers):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    theta = helpers.flat_params(model)

    def out_of(th):
        parts = {n: t.reshape(s) for n, t, s in zip(names, torch.split(th, sizes), shapes)}
        return functional_call(model, parts, (x,)).reshape(-1)

    out = out_of(theta)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
        j = jacrev(out_of)(theta)  # (N*C, d)
        h_out = hessian(lambda o: LOSS(o.reshape(x.shape[0], -1), y))(out)  # (N*C, N*C)
    return j.T @ h_out @ j


def test_ggn_matches_dense_jt_hout_j(case, helpers):
    name, model, x, y = case
    dense = _dense_ggn(model, x, y, helpers)
    op = GGNOperator(model, LOSS, (x, y), batch_size=7)
    g = op.to_dense()
    assert torch.allclose(g, dense, atol=ATOL)
    assert float(torch.linalg.eigvalsh(g).min()) > -1e-10  # cross-entropy: PSD


def test_ggn_equals_hessian_for_a_linear_model():
    gen = torch.Generator().manual_seed(2)
    model = nn.Linear(4, 3).double()
    x = torch.randn(30, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (30,), generator=gen)
    g = GGNOperator(model, LOSS, (x, y)).to_dense()
    h = HessianOperator(model, LOSS, (x, y)).to_dense()
    assert torch.allclose(g, h, atol=ATOL)


def _slow_covariance(model, x, y):
    """Per-example gradients one at a time with plain autograd, then the centered covariance."""
    grads = []
    for i in range(x.shape[0]):
        model.zero_grad()
        LOSS(model(x[i : i + 1]), y[i : i + 1]).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    model.zero_grad(set_to_none=True)
    g = torch.stack(grads)
    mean = g.mean(dim=0)
    return g.T @ g / g.shape[0] - torch.outer(mean, mean), mean


@pytest.mark.parametrize("cache_bytes", [0, 2**26], ids=["recompute", "cached"])
def test_noise_covariance_matches_the_slow_loop(case, cache_bytes):
    name, model, x, y = case
    slow, mean = _slow_covariance(model, x, y)
    op = GradientCovarianceOperator(model, LOSS, (x, y), batch_size=10, cache_bytes=cache_bytes)
    assert torch.allclose(op.to_dense(), slow, atol=ATOL)
    assert op.trace() == pytest.approx(float(torch.trace(slow)), abs=1e-10)
    assert torch.allclose(op.mean_gradient, mean, atol=ATOL)
    assert (op._cache is not None) == (cache_bytes > 0)


def test_alignment_with_dense_oracles(helpers):
    model, x, y = helpers.make_case("mlp_tanh", n=40)
    c_op = GradientCovarianceOperator(model, LOSS, (x, y))
    h_op = GGNOperator(model, LOSS, (x, y))  # PSD stand-in for H
    c, h = c_op.to_dense(), h_op.to_dense()
    damping = 0.05
    gen = torch.Generator().manual_seed(0)
    res = noise_curvature_alignment(
        c_op, h_op, k=3, num_probes=30, damping=damping, cg_tol=1e-10, generator=gen
    )
    exact = float(
        torch.trace(c @ torch.linalg.inv(h + damping * torch.eye(h.shape[0], dtype=h.dtype)))
    )
    assert res.cg_converged
    assert abs(res.trace_ratio.value - exact) < Z_TOL * res.trace_ratio.stderr
    assert res.noise_trace == pytest.approx(float(torch.trace(c)), abs=1e-10)
    # overlap from the dense eigenvectors
    uc = torch.linalg.eigh(c).eigenvectors[:, -3:]
    uh = torch.linalg.eigh(h).eigenvectors[:, -3:]
    assert res.overlap == pytest.approx(float(((uc.T @ uh) ** 2).sum()) / 3, abs=1e-6)
    assert 0.0 <= res.overlap <= 1.0


def test_alignment_of_identical_and_orthogonal_subspaces():
    lam = torch.tensor([5.0, 4.0, 0.1, 0.1, 0.1, 0.1], dtype=torch.float64)
    a = torch.diag(lam)
    b = torch.diag(lam.flip(0))  # top eigenspace of b is orthogonal to a's
    gen = torch.Generator().manual_seed(1)
    same = noise_curvature_alignment(a, a, k=2, damping=0.0, generator=gen)
    other = noise_curvature_alignment(a, b, k=2, damping=0.0, generator=gen)
    assert same.overlap == pytest.approx(1.0, abs=1e-8)
    assert other.overlap == pytest.approx(0.0, abs=1e-8)
    assert same.trace_ratio.value == pytest.approx(6.0, abs=1e-8)  # diagonal: exact
    assert isinstance(same.hessian_eigenpairs, Eigenpairs)
    assert torch.allclose(top_eigenvalues(a, 2).values, lam[:2])
