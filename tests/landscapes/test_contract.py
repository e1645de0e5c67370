"""The landscape contract: derivatives = autograd, minima are minima, noise = covariance.

Adding a landscape means adding one ``Case`` to ``CASES``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

from sgdtemp.landscapes import (
    AbstractLandscape,
    AbstractPerExampleLoss,
    MixturePotential,
    QuadraticLoss,
    TwoMinimaLoss,
    sample_two_minima_data,
)
from sgdtemp.simulate import Tabulated1D

RTOL = 1e-9
ATOL = 1e-9
# |grad| at a minimizer, relative to the typical gradient scale of the landscape.
STATIONARY_ATOL = 1e-8
# Nearby points for the local-minimum check: this far from the minimizer, relative.
NEARBY_RADIUS = 1e-3
N_POINTS = 7
# torch.func's forward mode scripts its decompositions with the deprecated torch.jit.script.
JIT_WARNING = "ignore:`torch.jit.script` is deprecated:DeprecationWarning"


def _two_minima(seed: int, n: int, **data) -> TwoMinimaLoss:
    gen = torch.Generator().manual_seed(seed)
    pot = data.pop("potential", MixturePotential())
    x, xi = sample_two_minima_data(n, generator=gen, **data)
    return TwoMinimaLoss(pot, x, xi)


def _two_minima_example_loss(loss: TwoMinimaLoss) -> Callable[[Tensor, int], Tensor]:
    """Independent oracle: -log of the mixture density by torch.distributions, plus the tilt."""
    pot = loss.potential
    normal = torch.distributions.Normal(
        torch.tensor(pot.m, dtype=torch.float64), torch.tensor(pot.w, dtype=torch.float64)
    )
    log_pi = torch.tensor(pot.pi, dtype=torch.float64).log()

    def example_loss(theta: Tensor, n: int) -> Tensor:
        u = theta[0] - loss.x[n]
        return -torch.logsumexp(log_pi + normal.log_prob(u), 0) + loss.xi[n] * theta[0]

    return example_loss


def _quadratic(d: int, n: int, seed: int) -> QuadraticLoss:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=gen, dtype=torch.float64)
    h = a @ a.T / d + 0.5 * torch.eye(d, dtype=torch.float64)
    xi = torch.randn(n, d, generator=gen, dtype=torch.float64) @ a + 0.3
    return QuadraticLoss(h, xi)


def _quadratic_example_loss(loss: QuadraticLoss) -> Callable[[Tensor, int], Tensor]:
    def example_loss(theta: Tensor, n: int) -> Tensor:
        return 0.5 * theta @ loss.H @ theta + loss.xi[n] @ theta

    return example_loss


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[], AbstractLandscape]
    box: tuple[float, float]  # random test points are drawn uniformly in box^d
    example_loss: Callable[[AbstractLandscape], Callable[[Tensor, int], Tensor]] | None = None
    third: bool = False


CASES = [
    Case(
        "two-minima-tilt",
        lambda: _two_minima(0, 256, translation_std=0.02, tilt_std=8.0),
        (-5.0, 6.0),
        _two_minima_example_loss,  # type: ignore[arg-type]
        third=True,
    ),
    Case(
        "two-minima-translation",
        lambda: _two_minima(1, 200, translation_std=0.3, tilt_std=0.0, shift=0.5),
        (-5.0, 6.0),
        _two_minima_example_loss,  # type: ignore[arg-type]
        third=True,
    ),
    Case(
        "two-minima-sharp-deep",
        lambda: _two_minima(
            2,
            150,
            translation_std=0.1,
            tilt_std=1.0,
            potential=MixturePotential(m=(-1.0, 1.5), w=(0.3, 1.0), pi=(0.7, 0.3)),
        ),
        (-3.0, 4.0),
        _two_minima_example_loss,  # type: ignore[arg-type]
        third=True,
    ),
    Case(
        "two-minima-wide-left",  # w1 > w2: the log-ratio is concave
        lambda: _two_minima(
            6,
            100,
            translation_std=0.2,
            tilt_std=2.0,
            potential=MixturePotential(m=(-2.0, 2.0), w=(1.5, 0.5), pi=(0.6, 0.4)),
        ),
        (-6.0, 6.0),
        _two_minima_example_loss,  # type: ignore[arg-type]
        third=True,
    ),
    Case("quadratic-1d", lambda: _quadratic(1, 50, 3), (-3.0, 3.0), _quadratic_example_loss),  # type: ignore[arg-type]
    Case("quadratic-3d", lambda: _quadratic(3, 40, 4), (-3.0, 3.0), _quadratic_example_loss),  # type: ignore[arg-type]
    Case(
        "tabulated-two-minima",
        lambda: Tabulated1D.from_landscape(
            _two_minima(5, 128, translation_std=0.02, tilt_std=8.0), -6.0, 7.0, 501
        ),
        (-6.5, 7.5),  # beyond the table too: the quadratic extension
    ),
]

_CACHE: dict[str, AbstractLandscape] = {}


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request) -> tuple[Case, AbstractLandscape]:
    c = request.param
    if c.id not in _CACHE:
        _CACHE[c.id] = c.make()
    return c, _CACHE[c.id]


def _points(case: Case, landscape: AbstractLandscape, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    lo, hi = case.box
    u = torch.rand(N_POINTS, landscape.dim, generator=gen, dtype=torch.float64)
    return lo + (hi - lo) * u


def test_grad_is_autograd_of_loss(case) -> None:
    c, land = case
    theta = _points(c, land).requires_grad_()
    (auto,) = torch.autograd.grad(land.loss(theta).sum(), theta)
    torch.testing.assert_close(land.grad(theta.detach()), auto, rtol=RTOL, atol=ATOL)


@pytest.mark.filterwarnings(JIT_WARNING)
def test_hessian_is_autograd_and_symmetric(case) -> None:
    c, land = case
    theta = _points(c, land)
    hess = land.hessian(theta)
    assert hess.shape == (N_POINTS, land.dim, land.dim)
    torch.testing.assert_close(hess, hess.mT, rtol=0, atol=ATOL)
    for p, h in zip(theta, hess):
        auto = torch.func.hessian(lambda t: land.loss(t.unsqueeze(0))[0])(p)
        torch.testing.assert_close(h, auto, rtol=RTOL, atol=ATOL)


@pytest.mark.filterwarnings(JIT_WARNING)
def test_third_derivative_is_autograd(case) -> None:
    c, land = case
    if not c.third:
        pytest.skip("no third derivative declared")
    assert isinstance(land, TwoMinimaLoss)
    theta = _points(c, land)[:3]
    third = land.third_derivative(theta)
    assert third.shape == (3, 1, 1, 1)
    for p, t3 in zip(theta, third):
        auto = torch.func.jacfwd(torch.func.hessian(lambda t: land.loss(t.unsqueeze(0))[0]))(p)
        torch.testing.assert_close(t3, auto, rtol=RTOL, atol=ATOL)


def test_minimizers_are_stationary_local_minima(case) -> None:
    c, land = case
    minima = land.minimizers()
    assert minima.ndim == 2 and minima.shape[1] == land.dim and minima.shape[0] >= 1
    if land.dim == 1:
        assert bool((minima[1:, 0] > minima[:-1, 0]).all()), "sorted by first coordinate"
    scale = float(land.grad(_points(c, land)).abs().max())
    grad = land.grad(minima)
    assert float(grad.abs().max()) <= STATIONARY_ATOL * max(scale, 1.0)
    gen = torch.Generator().manual_seed(1)
    for m in minima:
        radius = NEARBY_RADIUS * max(1.0, float(m.abs().max()))
        near = m + radius * torch.randn(64, land.dim, generator=gen, dtype=torch.float64)
        assert float(land.loss(m.unsqueeze(0))[0]) <= float(land.loss(near).min())
        assert bool((torch.linalg.eigvalsh(land.hessian(m.unsqueeze(0))[0]) > 0).all())


def test_noise_cov_is_covariance_of_example_grads(case) -> None:
    c, land = case
    if not isinstance(land, AbstractPerExampleLoss):
        pytest.skip("not a per-example loss")
    theta = _points(c, land)
    grads = land.all_example_grads(theta)  # (k, N, d)
    centered = grads - grads.mean(dim=1, keepdim=True)
    slow = torch.einsum("kni,knj->kij", centered, centered) / land.n_examples
    torch.testing.assert_close(land.noise_cov(theta), slow, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(land.grad(theta), grads.mean(dim=1), rtol=RTOL, atol=ATOL)


def test_example_grads_are_autograd_of_example_losses(case) -> None:
    c, land = case
    if c.example_loss is None:
        pytest.skip("not a per-example loss")
    assert isinstance(land, AbstractPerExampleLoss)
    oracle = c.example_loss(land)
    theta = _points(c, land)
    gen = torch.Generator().manual_seed(2)
    idx = torch.randint(0, land.n_examples, (N_POINTS, 5), generator=gen)
    grads = land.example_grads(theta, idx)
    assert grads.shape == (N_POINTS, 5, land.dim)
    for k in range(N_POINTS):
        for b in range(5):
            auto = torch.func.grad(oracle)(theta[k], int(idx[k, b]))
            torch.testing.assert_close(grads[k, b], auto, rtol=RTOL, atol=ATOL)
    # The train loss is the mean of the oracle's per-example losses.
    mean = torch.stack([oracle(theta[0], n) for n in range(land.n_examples)]).mean()
    assert float(land.loss(theta[:1])[0]) == pytest.approx(float(mean), rel=RTOL, abs=ATOL)
    # The fused minibatch gradient equals the mean of the example gradients.
    torch.testing.assert_close(
        land.minibatch_grad(theta, idx), grads.mean(dim=1), rtol=RTOL, atol=ATOL
    )


def test_shapes_follow_batch_dimensions(case) -> None:
    c, land = case
    theta = _points(c, land).reshape(N_POINTS, 1, land.dim).expand(N_POINTS, 2, land.dim)
    assert land.loss(theta).shape == (N_POINTS, 2)
    assert land.grad(theta).shape == (N_POINTS, 2, land.dim)
    assert land.hessian(theta).shape == (N_POINTS, 2, land.dim, land.dim)
    assert land.noise_cov(theta).shape == (N_POINTS, 2, land.dim, land.dim)
    assert math.isfinite(float(land.loss(theta).sum()))
