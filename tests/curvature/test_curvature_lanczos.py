"""Lanczos, top eigenpairs and SLQ on matrices with known spectra."""

from __future__ import annotations

import math

import pytest
import torch

from sgdtemp.curvature import lanczos, random_probes, spectral_density, top_eigenvalues
from sgdtemp.errors import UserError

EIG_RTOL = 1e-8  # eigenvalues of converged Ritz pairs (float64, relative to lambda_max)
VEC_TOL = 1e-6  # 1 - |<u, u_true>| for converged eigenvectors with a spectral gap
Z_TOL = 4.0


def _with_spectrum(lam: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    d = lam.numel()
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    return q @ torch.diag(lam) @ q.T, q


def test_lanczos_decomposition_is_orthonormal_and_tridiagonalizes():
    lam = torch.linspace(-1.0, 3.0, 30, dtype=torch.float64)
    a, _ = _with_spectrum(lam, seed=0)
    res = lanczos(a, 12, generator=torch.Generator().manual_seed(1))
    q = res.basis
    assert q.shape == (30, 12)
    assert torch.allclose(q.T @ q, torch.eye(12, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(q.T @ a @ q, res.tridiagonal(), atol=1e-10)


def test_full_lanczos_recovers_the_whole_spectrum():
    lam = torch.tensor([-2.0, -0.5, 0.0, 0.1, 1.0, 4.0, 7.5], dtype=torch.float64)
    a, _ = _with_spectrum(lam, seed=1)
    res = lanczos(a, 7, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(torch.linalg.eigvalsh(res.tridiagonal()), lam, atol=1e-10)


def test_top_eigenpairs_of_a_known_spectrum():
    d = 200
    lam = torch.cat(
        [
            torch.tensor([50.0, 30.0, 20.0, 12.0, 8.0], dtype=torch.float64),
            torch.linspace(-3.0, 2.0, d - 5, dtype=torch.float64),
        ]
    )
    a, q = _with_spectrum(lam, seed=2)
    pairs = top_eigenvalues(a, 4, tol=1e-10, generator=torch.Generator().manual_seed(3))
    assert pairs.converged
    assert torch.allclose(pairs.values, lam[:4], rtol=0, atol=EIG_RTOL * 50)
    overlaps = (pairs.vectors.T @ q[:, :4]).diagonal().abs()
    assert float((1 - overlaps).max()) < VEC_TOL
    # residual bounds are honest: the true residuals do not exceed them (up to rounding)
    true_res = torch.linalg.vector_norm(a @ pairs.vectors - pairs.vectors * pairs.values, dim=0)
    assert bool((true_res <= pairs.residual_norms + 1e-9).all())
    assert pairs.num_matvecs < d


def test_warm_start_converges_in_few_products():
    """A start vector near the top eigenvector (a slightly perturbed operator) needs few steps."""
    d = 300
    lam = torch.cat(
        [torch.tensor([40.0, 25.0], dtype=torch.float64), torch.linspace(-2.0, 10.0, d - 2)]
    ).double()
    a, q = _with_spectrum(lam, seed=7)
    cold = top_eigenvalues(a, 1, tol=1e-6, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    bump = torch.randn(d, d, generator=gen, dtype=torch.float64)
    moved = a + 0.05 * (bump + bump.T) / 2
    truth = float(torch.linalg.eigvalsh(moved)[-1])
    warm = top_eigenvalues(
        moved, 1, tol=1e-6, v0=cold.vectors[:, 0], generator=torch.Generator().manual_seed(2)
    )
    fresh = top_eigenvalues(moved, 1, tol=1e-6, generator=torch.Generator().manual_seed(2))
    assert warm.converged and fresh.converged
    assert float(warm.values[0]) == pytest.approx(truth, rel=1e-9)
    assert warm.num_matvecs < fresh.num_matvecs / 2
    assert warm.num_matvecs >= 3  # at least k + 2 products before the first check


def test_largest_algebraic_not_largest_magnitude():
    lam = torch.tensor([-10.0, -9.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    a, _ = _with_spectrum(lam, seed=5)
    pairs = top_eigenvalues(a, 2, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(pairs.values, torch.tensor([3.0, 2.0], dtype=torch.float64), atol=1e-9)


def test_repeated_eigenvalues_are_all_found():
    lam = torch.tensor([5.0, 5.0, 5.0] + [1.0] * 17, dtype=torch.float64)
    a, _ = _with_spectrum(lam, seed=6)
    pairs = top_eigenvalues(a, 4, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(
        pairs.values, torch.tensor([5.0, 5.0, 5.0, 1.0], dtype=torch.float64), atol=1e-9
    )
    # the three eigenvectors of 5 span the eigenspace: projector onto it has trace 3
    v = pairs.vectors[:, :3]
    assert torch.allclose(v.T @ v, torch.eye(3, dtype=torch.float64), atol=1e-8)


@pytest.mark.parametrize("k", [0, 11])
def test_k_out_of_range_is_a_user_error(k):
    with pytest.raises(UserError, match="number of parameters"):
        top_eigenvalues(torch.eye(10), k)


def test_lanczos_bad_iterations():
    with pytest.raises(UserError, match="num_iters"):
        lanczos(torch.eye(4), 5)


def test_slq_quadrature_is_exact_for_low_degree_moments():
    """Per probe, Gauss quadrature with m nodes integrates polynomials of degree < 2m exactly."""
    d, m, probes = 40, 6, 3
    lam = torch.linspace(0.0, 2.0, d, dtype=torch.float64) ** 2
    a, _ = _with_spectrum(lam, seed=7)
    sd = spectral_density(
        a, num_iters=m, num_probes=probes, generator=torch.Generator().manual_seed(4)
    )
    v = random_probes(d, probes, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    v = v / torch.linalg.vector_norm(v, dim=0)
    for power in range(0, 2 * m):
        exact = (v * (torch.linalg.matrix_power(a, power) @ v)).sum(dim=0)
        assert torch.allclose(sd.moment_per_probe(power), exact, rtol=1e-8, atol=1e-10)


def test_slq_density_integrates_to_one_and_matches_the_spectrum_moments():
    d = 300
    gen = torch.Generator().manual_seed(8)
    lam = torch.cat(
        [
            torch.randn(d - 10, generator=gen, dtype=torch.float64).abs() * 0.5,
            torch.linspace(3.0, 6.0, 10, dtype=torch.float64),
        ]
    )
    a, _ = _with_spectrum(lam, seed=9)
    sd = spectral_density(a, num_iters=30, num_probes=40, generator=gen)
    assert torch.allclose(sd.weights.sum(dim=1), torch.ones(40, dtype=torch.float64), atol=1e-10)
    grid = torch.linspace(-3.0, 10.0, 4001, dtype=torch.float64)
    dens = sd.density(grid, sigma=0.1)
    assert bool((dens >= 0).all())
    assert float(torch.trapezoid(dens, grid)) == pytest.approx(1.0, abs=1e-6)
    for power in (1, 2, 3):
        per_probe = sd.moment_per_probe(power)
        sem = float(per_probe.std()) / math.sqrt(per_probe.numel())
        true = float((lam**power).mean())
        assert abs(sd.moment(power) - true) < Z_TOL * sem + 1e-12
