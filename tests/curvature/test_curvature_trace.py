"""Trace estimators on matrices with known traces and variances."""

from __future__ import annotations

import math

import pytest
import torch

from sgdtemp.curvature import hutchinson_trace, hutchpp_trace, random_probes
from sgdtemp.errors import UserError

N_REPEATS = 300  # independent estimates for the statistical checks
Z_TOL = 4.0  # allowed deviation of a mean, in standard errors
VAR_RTOL = 0.25  # allowed relative error of an averaged variance estimate


def _symmetric(d: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=gen, dtype=torch.float64)
    return (a + a.T) / 2


def _psd_decaying(d: int, seed: int, decay: float = 1.5) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    lam = torch.arange(1, d + 1, dtype=torch.float64) ** (-decay)
    return q @ torch.diag(lam) @ q.T


class _OnlyMatmul:
    """A user operator with nothing but ``shape`` and ``@``; counts the products."""

    def __init__(self, a: torch.Tensor) -> None:
        self.a = a
        self.shape = a.shape
        self.calls = 0

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.a @ x.to(self.a.dtype)


def test_rademacher_is_exact_on_a_diagonal_matrix():
    a = torch.diag(torch.tensor([1.0, -2.0, 5.0, 0.25], dtype=torch.float64))
    est = hutchinson_trace(a, 5, generator=torch.Generator().manual_seed(0))
    assert est.value == pytest.approx(4.25, abs=1e-12)
    assert est.stderr == pytest.approx(0.0, abs=1e-12)
    assert est.num_products == 5 and est.method == "hutchinson"


@pytest.mark.parametrize("distribution", ["rademacher", "normal"])
def test_hutchinson_unbiased_and_stderr_matches_the_variance(distribution):
    a = _symmetric(20, seed=3)
    m = 10
    gen = torch.Generator().manual_seed(7)
    ests = [
        hutchinson_trace(a, m, distribution=distribution, generator=gen) for _ in range(N_REPEATS)
    ]
    values = torch.tensor([e.value for e in ests], dtype=torch.float64)
    true = float(torch.trace(a))
    # closed-form per-probe variance of z^T A z for symmetric A
    fro2 = float((a**2).sum())
    diag2 = float((torch.diagonal(a) ** 2).sum())
    per_probe_var = 2 * (fro2 - diag2) if distribution == "rademacher" else 2 * fro2
    sem = math.sqrt(per_probe_var / m / N_REPEATS)
    assert abs(float(values.mean()) - true) < Z_TOL * sem
    mean_reported_var = sum(e.stderr**2 for e in ests) / N_REPEATS
    assert mean_reported_var == pytest.approx(per_probe_var / m, rel=VAR_RTOL)
    assert float(values.var()) == pytest.approx(per_probe_var / m, rel=VAR_RTOL)


def test_probes_are_batched_into_one_product_and_user_operators_work():
    a = _symmetric(12, seed=1)
    op = _OnlyMatmul(a)
    est_op = hutchinson_trace(op, 6, generator=torch.Generator().manual_seed(5))
    est_dense = hutchinson_trace(a, 6, generator=torch.Generator().manual_seed(5))
    assert op.calls == 1
    # _OnlyMatmul has no dtype: probes are float32, products float64; values agree closely
    assert est_op.value == pytest.approx(est_dense.value, rel=1e-6)


def test_same_generator_seed_same_estimate():
    a = _symmetric(15, seed=2)
    e1 = hutchinson_trace(a, 4, generator=torch.Generator().manual_seed(9))
    e2 = hutchinson_trace(a, 4, generator=torch.Generator().manual_seed(9))
    assert e1.value == e2.value


def test_hutchpp_exact_when_rank_fits_the_sketch():
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    a = u @ torch.diag(torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64)) @ u.T
    est = hutchpp_trace(a, 12, generator=gen)  # sketch of 4 columns >= rank 3
    assert est.value == pytest.approx(float(torch.trace(a)), rel=1e-10)
    assert est.stderr == pytest.approx(0.0, abs=1e-8)
    assert est.num_products == 12 and est.method == "hutchpp"


def test_hutchpp_beats_hutchinson_on_a_decaying_spectrum():
    a = _psd_decaying(60, seed=4)
    true = float(torch.trace(a))
    gen = torch.Generator().manual_seed(11)
    budget = 24
    err_h = [hutchinson_trace(a, budget, generator=gen).value - true for _ in range(100)]
    err_pp = [hutchpp_trace(a, budget, generator=gen).value - true for _ in range(100)]
    rms_h = math.sqrt(sum(e * e for e in err_h) / 100)
    rms_pp = math.sqrt(sum(e * e for e in err_pp) / 100)
    assert rms_pp < 0.5 * rms_h
    assert abs(sum(err_pp) / 100) < Z_TOL * rms_pp / 10  # still unbiased


@pytest.mark.parametrize("bad", [0, -1])
def test_zero_probes_is_a_user_error(bad):
    with pytest.raises(UserError, match="num_matvecs"):
        hutchinson_trace(torch.eye(3), bad)
    with pytest.raises(UserError, match="num_matvecs"):
        hutchpp_trace(torch.eye(3), 2)


def test_non_square_operator_is_a_user_error():
    with pytest.raises(UserError, match="square"):
        hutchinson_trace(torch.zeros(3, 4), 2)


def test_random_probes_shapes_and_moments():
    z = random_probes(
        50,
        400,
        distribution="normal",
        dtype=torch.float64,
        generator=torch.Generator().manual_seed(0),
    )
    assert z.shape == (50, 400) and z.dtype == torch.float64
    cov = z @ z.T / 400
    assert float((cov - torch.eye(50, dtype=torch.float64)).abs().max()) < 0.35
    with pytest.raises(UserError, match="distribution"):
        random_probes(3, 2, distribution="uniform")
