"""The 2-D double well and its per-example version: derivatives, minima, exact noise covariance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.autograd.functional import hessian, jacobian

from sgdtemp.errors import UserError
from sgdtemp.landscapes.double_well_2d import DoubleWell2D, DoubleWell2DLoss, double_well_2d_loss

ATOL = 1e-10  # float64 agreement of analytic derivatives with autograd
COV_RTOL = 1e-10  # feature-moment covariance vs the slow per-example reference


def data_loss(seed: int = 0, **kw: float) -> DoubleWell2DLoss:
    return double_well_2d_loss(128, generator=torch.Generator().manual_seed(seed), **kw)


CASES = {
    "isotropic": lambda: DoubleWell2D(t=-0.1, g=1.5, sigma=0.7),
    "isotropic_tilted": lambda: DoubleWell2D(t=0.4, g=-0.8),
    "data": lambda: data_loss(),
    "data_translation_only": lambda: data_loss(1, translation_scale=0.3, tilt_scale=0.0),
}


@pytest.fixture(params=list(CASES), ids=[f"landscape={k}" for k in CASES])
def landscape(request: pytest.FixtureRequest):
    return CASES[request.param]()


def points(n: int = 7) -> torch.Tensor:
    return torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))


def test_grad_and_hessian_match_autograd(landscape) -> None:
    theta = points()
    auto_g = torch.stack([jacobian(landscape.loss, t) for t in theta])  # reverse mode only
    auto_h = torch.stack([hessian(landscape.loss, t) for t in theta])
    torch.testing.assert_close(landscape.grad(theta), auto_g, rtol=0, atol=ATOL)
    torch.testing.assert_close(landscape.hessian(theta), auto_h, rtol=0, atol=ATOL)
    h = landscape.hessian(theta)
    torch.testing.assert_close(h, h.transpose(-1, -2), rtol=0, atol=0)


def test_minimizers_are_strict_minima_and_saddle_is_index_one(landscape) -> None:
    mins = landscape.minimizers()
    assert mins.shape == (2, 2) and bool(mins[0, 0] < mins[1, 0])
    assert float(landscape.grad(mins).abs().max()) < 1e-9
    assert bool((torch.linalg.eigvalsh(landscape.hessian(mins)) > 0).all())
    saddle = landscape.saddles()
    assert float(landscape.grad(saddle).abs().max()) < 1e-9
    eig = torch.linalg.eigvalsh(landscape.hessian(saddle))[0]
    assert float(eig[0]) < 0 < float(eig[1])
    # the global minimum beats random points
    assert float(landscape.loss(mins).min()) <= float(landscape.loss(points(256)).min())


def test_defaults_right_basin_deeper_and_sharper_in_y() -> None:
    land = DoubleWell2D()
    mins = land.minimizers()
    x = torch.tensor(np.roots([4.0, 0.0, -4.0, -0.1]).real, dtype=torch.float64).sort().values
    torch.testing.assert_close(mins[:, 0], x[[0, 2]], rtol=0, atol=1e-12)
    loss, h = land.loss(mins), land.hessian(mins)
    assert float(loss[1]) < float(loss[0])
    assert float(h[1, 1, 1]) > float(h[0, 1, 1])
    torch.testing.assert_close(h[:, 1, 1], torch.exp(1.5 * mins[:, 0]), rtol=1e-14, atol=0)


def test_noise_cov_is_population_covariance_of_example_grads() -> None:
    loss = data_loss()
    theta = points(5)
    g = loss.all_example_grads(theta)  # (chains, N, 2)
    centered = g - g.mean(dim=1, keepdim=True)
    reference = torch.einsum("cni,cnj->cij", centered, centered) / loss.n_examples
    torch.testing.assert_close(loss.noise_cov(theta), reference, rtol=COV_RTOL, atol=1e-12)
    torch.testing.assert_close(g.mean(dim=1), loss.grad(theta), rtol=0, atol=ATOL)
    # anisotropic, with off-diagonal terms, and state dependent
    c = loss.noise_cov(theta)
    assert float(c[:, 0, 1].abs().min()) > 1e-3
    assert float((c[0] - c[1]).abs().max()) > 1e-2


def test_minibatch_grad_matches_example_grads() -> None:
    loss = data_loss()
    theta = points(6)
    idx = torch.randint(0, loss.n_examples, (6, 5), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(
        loss.minibatch_grad(theta, idx), loss.example_grads(theta, idx).mean(1), rtol=0, atol=ATOL
    )


def test_whitened_tilts_without_translation_reproduce_isotropic_well() -> None:
    sigma = 2.5
    loss = data_loss(translation_scale=0.0, tilt_scale=sigma)
    ref = DoubleWell2D(sigma=sigma)
    theta = points()
    torch.testing.assert_close(loss.loss(theta), ref.loss(theta), rtol=0, atol=ATOL)
    torch.testing.assert_close(loss.grad(theta), ref.grad(theta), rtol=0, atol=ATOL)
    torch.testing.assert_close(loss.noise_cov(theta), ref.noise_cov(theta), rtol=0, atol=1e-10)
    torch.testing.assert_close(loss.minimizers(), ref.minimizers(), rtol=0, atol=1e-10)


def test_dtype_follows_input() -> None:
    theta = points().to(torch.float32)
    for land in (DoubleWell2D(), data_loss()):
        assert land.loss(theta).dtype == torch.float32
        assert land.noise_cov(theta).dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"t": 1.6}, "single minimum"),
        ({"t": math.nan}, "finite"),
        ({"g": 20.0}, "too large"),
        ({"sigma": 0.0}, "sigma"),
    ],
)
def test_bad_parameters(kwargs: dict, match: str) -> None:
    with pytest.raises(UserError, match=match):
        DoubleWell2D(**kwargs)


def test_bad_data() -> None:
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(UserError, match="shape"):
        DoubleWell2DLoss(torch.zeros(4, 3), torch.zeros(4, 3))
    with pytest.raises(UserError, match="both 0"):
        double_well_2d_loss(8, translation_scale=0.0, tilt_scale=0.0, generator=gen)
    with pytest.raises(UserError, match="single basin"):
        double_well_2d_loss(64, translation_scale=3.0, generator=gen)
