"""Conjugate gradients against dense solves."""

from __future__ import annotations

import pytest
import torch

from sgdtemp.curvature import DampedOperator, conjugate_gradient
from sgdtemp.errors import UserError

RTOL = 1e-8


def _spd(d: int, seed: int, cond: float = 100.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    lam = torch.logspace(0, torch.log10(torch.tensor(cond)).item(), d, dtype=torch.float64)
    return q @ torch.diag(lam) @ q.T


def test_cg_matches_a_dense_solve_for_several_right_hand_sides():
    a = _spd(30, seed=0)
    b = torch.randn(30, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    res = conjugate_gradient(a, b, tol=1e-12)
    assert res.all_converged and not bool(res.negative_curvature.any())
    assert torch.allclose(res.x, torch.linalg.solve(a, b), rtol=RTOL, atol=1e-10)
    assert res.x.shape == (30, 4)


def test_cg_damping_equals_a_damped_operator():
    a = _spd(20, seed=2)
    b = torch.randn(20, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    damped = conjugate_gradient(a, b, damping=0.5, tol=1e-12)
    explicit = conjugate_gradient(DampedOperator(a, 0.5), b, tol=1e-12)
    exact = torch.linalg.solve(a + 0.5 * torch.eye(20, dtype=torch.float64), b)
    assert torch.allclose(damped.x, exact, rtol=RTOL, atol=1e-10)
    assert torch.allclose(explicit.x, exact, rtol=RTOL, atol=1e-10)


def test_cg_reports_negative_curvature_instead_of_diverging():
    a = torch.diag(torch.tensor([2.0, 1.0, -1.0], dtype=torch.float64))
    b = torch.ones(3, 2, dtype=torch.float64)
    b[2, 1] = 0.0  # second column never sees the negative direction
    res = conjugate_gradient(a, b, tol=1e-12)
    assert res.negative_curvature.tolist() == [True, False]
    assert res.converged.tolist() == [False, True]
    assert torch.allclose(res.x[:, 1], torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64))


def test_cg_bad_right_hand_side():
    with pytest.raises(UserError, match="right-hand side"):
        conjugate_gradient(torch.eye(3), torch.ones(4))
