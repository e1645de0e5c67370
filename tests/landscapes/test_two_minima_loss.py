"""The mixture potential, its data and the two-minima loss: closed forms, stability, validation."""

from __future__ import annotations

import math

import pytest
import torch

from sgdtemp.errors import UserError
from sgdtemp.landscapes import MixturePotential, TwoMinimaLoss, sample_two_minima_data

RTOL = 1e-10
# Sample moments of n draws: within this many standard errors.
N_SIGMA = 5.0
# theory.md §5: with translation-type noise C ~ U''^2 Var(x) near a minimum (first order in the
# translation spread); relative agreement required.
NOISE_MODEL_RTOL = 0.05


def mixture_density(pot: MixturePotential, u: torch.Tensor) -> torch.Tensor:
    total = torch.zeros_like(u)
    for m, w, p in zip(pot.m, pot.w, pot.pi):
        total = total + p * torch.exp(-0.5 * ((u - m) / w) ** 2) / (w * math.sqrt(2 * math.pi))
    return total


def test_value_is_negative_log_mixture_density() -> None:
    pot = MixturePotential(m=(-1.0, 3.0), w=(0.4, 2.0), pi=(0.3, 0.7))
    u = torch.linspace(-4.0, 7.0, 101, dtype=torch.float64)
    torch.testing.assert_close(pot.value(u), -mixture_density(pot, u).log(), rtol=RTOL, atol=0)


def test_derivatives_match_autograd() -> None:
    pot = MixturePotential()
    u = torch.linspace(-6.0, 7.0, 57, dtype=torch.float64).requires_grad_()
    d1 = torch.autograd.grad(pot.value(u).sum(), u, create_graph=True)[0]
    d2 = torch.autograd.grad(d1.sum(), u, create_graph=True)[0]
    d3 = torch.autograd.grad(d2.sum(), u)[0]
    for ours, auto in ((pot.d1(u), d1), (pot.d2(u), d2), (pot.d3(u), d3)):
        torch.testing.assert_close(ours.detach(), auto.detach(), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("u", [-1e3, 1e3, -1e6, 1e6])
def test_stable_far_from_the_minima(u: float) -> None:
    pot = MixturePotential()
    t = torch.tensor([u], dtype=torch.float64)
    # Far out one component dominates: U ~ (u - m_k)^2 / (2 w_k^2) + const, U' ~ (u - m_k)/w_k^2.
    k = pot.wide  # the wider component has the heavier tails
    m, w, p = pot.m[k], pot.w[k], pot.pi[k]
    tail = 0.5 * ((u - m) / w) ** 2 - math.log(p / (w * math.sqrt(2 * math.pi)))
    assert float(pot.value(t)) == pytest.approx(tail, rel=1e-12)
    assert float(pot.d1(t)) == pytest.approx((u - m) / w**2, rel=1e-12)
    assert float(pot.d2(t)) == pytest.approx(1 / w**2, rel=1e-12)
    assert float(pot.d3(t)) == 0.0


def test_dtype_and_shape_follow_input() -> None:
    pot = MixturePotential()
    u = torch.zeros(3, 4, dtype=torch.float32)
    for fn in (pot.value, pot.d1, pot.d2, pot.d3):
        out = fn(u)
        assert out.shape == (3, 4) and out.dtype == torch.float32


def test_wide_is_the_larger_width() -> None:
    assert MixturePotential(w=(0.5, 1.5)).wide == 1
    assert MixturePotential(w=(2.0, 0.3)).wide == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"w": (0.5, 0.0)},
        {"w": (-1.0, 1.0)},
        {"pi": (0.5, 0.6)},
        {"pi": (0.0, 1.0)},
        {"m": (1.0, 1.0)},
        {"m": (2.0, -2.0)},
        {"m": (0.0, float("nan"))},
        {"w": (1.0,)},
    ],
)
def test_potential_rejects_bad_parameters(kwargs) -> None:
    with pytest.raises(UserError):
        MixturePotential(**kwargs)


def test_sample_data_moments_and_determinism() -> None:
    n = 20_000
    gen = torch.Generator().manual_seed(3)
    x, xi = sample_two_minima_data(n, translation_std=0.3, tilt_std=5.0, shift=1.5, generator=gen)
    assert x.shape == xi.shape == (n,) and x.dtype == xi.dtype == torch.float64
    assert abs(float(x.mean()) - 1.5) < N_SIGMA * 0.3 / math.sqrt(n)
    assert abs(float(xi.mean())) < N_SIGMA * 5.0 / math.sqrt(n)
    assert abs(float(x.std()) / 0.3 - 1) < N_SIGMA / math.sqrt(2 * n)
    assert abs(float(xi.std()) / 5.0 - 1) < N_SIGMA / math.sqrt(2 * n)
    again = sample_two_minima_data(
        n, translation_std=0.3, tilt_std=5.0, shift=1.5, generator=torch.Generator().manual_seed(3)
    )
    assert torch.equal(again[0], x) and torch.equal(again[1], xi)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": 0},
        {"n": 2.5},
        {"translation_std": -0.1},
        {"tilt_std": float("inf")},
        {"shift": float("nan")},
    ],
)
def test_sample_data_rejects_bad_input(kwargs) -> None:
    args = {"n": 10, "translation_std": 0.1, "tilt_std": 1.0} | kwargs
    with pytest.raises(UserError):
        sample_two_minima_data(generator=torch.Generator(), **args)


@pytest.mark.parametrize("seed", [0, 1])
def test_theory_defaults_keep_two_minima(seed: int) -> None:
    """theory.md §5: m=±2, w=(0.5,1.5), pi=(0.4,0.6), tilt 8, translation 0.02, N=4096."""
    gen = torch.Generator().manual_seed(seed)
    x, xi = sample_two_minima_data(4096, translation_std=0.02, tilt_std=8.0, generator=gen)
    loss = TwoMinimaLoss(MixturePotential(), x, xi)
    minima, barrier = loss.minimizers()[:, 0], loss.barrier()
    assert minima.shape == (2,) and barrier.shape == (1,)
    assert float(minima[0]) < float(barrier[0]) < float(minima[1])
    assert loss.wide == 1
    h = loss.hessian(loss.minimizers())[:, 0, 0]
    assert float(h[loss.wide]) < float(h[1 - loss.wide]), "the wide minimum is flatter"
    assert float(loss.hessian(barrier.unsqueeze(0))) < 0


def test_minima_follow_a_pure_translation() -> None:
    """All x_n equal s: L(theta) = U(theta - s) + xibar theta, so the minima move by exactly s."""
    n, s = 64, 0.7
    xi = 0.1 * torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    base = TwoMinimaLoss(MixturePotential(), torch.zeros(n, dtype=torch.float64), xi)
    moved = TwoMinimaLoss(MixturePotential(), torch.full((n,), s, dtype=torch.float64), xi)
    torch.testing.assert_close(moved.minimizers() - s, base.minimizers(), rtol=0, atol=1e-9)
    # xibar theta only adds s * xibar to the loss after the move, so the depths differ by that.
    diff = moved.loss(moved.minimizers()) - base.loss(base.minimizers())
    torch.testing.assert_close(diff, torch.full_like(diff, s * float(xi.mean())), rtol=0, atol=1e-9)


def test_minima_without_data_are_the_potential_minima() -> None:
    pot = MixturePotential()
    loss = TwoMinimaLoss(
        pot, torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    )
    minima = loss.minimizers()[:, 0]
    torch.testing.assert_close(
        pot.d1(minima), torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-12
    )
    assert bool((pot.d2(minima) > 0).all())


def test_destroyed_minimum_is_a_user_error() -> None:
    gen = torch.Generator().manual_seed(0)
    x, xi = sample_two_minima_data(400, translation_std=1.5, tilt_std=0.0, generator=gen)
    loss = TwoMinimaLoss(MixturePotential(), x, xi)  # the spread smooths the sharp basin away
    with pytest.raises(UserError, match="local minima"):
        loss.minimizers()


def test_a_strong_tilt_can_carry_the_wide_minimum_past_the_sharp_one() -> None:
    """Tilting N(u; m, w^2) by exp(-xi u) moves its mode to m - xi w^2: the wide one moves most."""
    n, tilt = 16, 4.0
    pot = MixturePotential()
    x, xi = torch.zeros(n, dtype=torch.float64), torch.full((n,), tilt, dtype=torch.float64)
    loss = TwoMinimaLoss(pot, x, xi)
    minima = loss.minimizers()[:, 0]
    assert loss.wide == 0, "the wide minimum is now on the left"
    k = pot.wide
    assert float(minima[0]) == pytest.approx(pot.m[k] - tilt * pot.w[k] ** 2, abs=0.05)
    h = loss.hessian(loss.minimizers())[:, 0, 0]
    assert float(h[loss.wide]) < float(h[1 - loss.wide])


def test_translation_noise_is_curvature_squared_times_spread() -> None:
    gen = torch.Generator().manual_seed(4)
    x, xi = sample_two_minima_data(4096, translation_std=0.01, tilt_std=0.0, generator=gen)
    loss = TwoMinimaLoss(MixturePotential(), x, xi)
    minima = loss.minimizers()
    c = loss.noise_cov(minima)[:, 0, 0]
    predicted = loss.hessian(minima)[:, 0, 0] ** 2 * x.var(unbiased=False)
    torch.testing.assert_close(c, predicted, rtol=NOISE_MODEL_RTOL, atol=0)
    assert float(c[1 - loss.wide]) > float(c[loss.wide]), "noise is largest in the sharp basin"


def test_grad_hessian_noise_agrees_with_separate_methods() -> None:
    gen = torch.Generator().manual_seed(5)
    x, xi = sample_two_minima_data(300, translation_std=0.05, tilt_std=3.0, generator=gen)
    loss = TwoMinimaLoss(MixturePotential(), x, xi)
    theta = torch.linspace(-6.0, 7.0, 2000, dtype=torch.float64).unsqueeze(1)  # the BLAS path
    g, h, c = loss.grad_hessian_noise(theta)
    torch.testing.assert_close(g, loss.grad(theta), rtol=RTOL, atol=1e-12)
    torch.testing.assert_close(h, loss.hessian(theta), rtol=RTOL, atol=1e-12)
    torch.testing.assert_close(c, loss.noise_cov(theta), rtol=RTOL, atol=1e-12)
    small = theta[::400]  # the elementwise path
    torch.testing.assert_close(loss.grad(small), g[::400], rtol=RTOL, atol=1e-12)
    grads = loss.all_example_grads(small)[..., 0]
    torch.testing.assert_close(
        c[::400, 0, 0], grads.var(dim=1, unbiased=False), rtol=1e-9, atol=1e-12
    )


@pytest.mark.parametrize(
    "pot, side",
    [
        (MixturePotential(), "high"),  # convex log-ratio: sigma_n = 1 far right
        (MixturePotential(m=(-2.0, 2.0), w=(1.5, 0.5), pi=(0.6, 0.4)), "low"),  # concave: 0
    ],
)
def test_saturated_points_match_the_direct_sums(pot: MixturePotential, side: str) -> None:
    """Grid points where no sigmoid is evaluated agree with per-example sums."""
    gen = torch.Generator().manual_seed(6)
    x, xi = sample_two_minima_data(200, translation_std=0.3, tilt_std=2.0, generator=gen)
    loss = TwoMinimaLoss(pot, x, xi)
    theta = torch.linspace(-9.0, 10.0, 300, dtype=torch.float64).unsqueeze(1)
    least, largest = loss._grid.log_ratio_range(theta[:, 0] - x.mean())
    saturated = least > 37.5 if side == "high" else largest < -40.0
    assert 10 < int(saturated.sum()) < 290, "the grid must cover both kinds of points"
    g, h, c = loss.grad_hessian_noise(theta)
    grads = loss.all_example_grads(theta)[..., 0]
    u = theta - x  # (points, N)
    torch.testing.assert_close(g[:, 0], grads.mean(dim=1), rtol=RTOL, atol=1e-11)
    torch.testing.assert_close(loss.grad(theta)[:, 0], grads.mean(dim=1), rtol=RTOL, atol=1e-11)
    torch.testing.assert_close(h[:, 0, 0], pot.d2(u).mean(dim=1), rtol=RTOL, atol=1e-11)
    torch.testing.assert_close(c[:, 0, 0], grads.var(dim=1, unbiased=False), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize(
    "x, xi",
    [
        (torch.zeros(3, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)),
        (torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float32)),
        (torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)),
        (torch.zeros(3, 1, dtype=torch.float64), torch.zeros(3, 1, dtype=torch.float64)),
        (torch.tensor([0.0, math.nan], dtype=torch.float64), torch.zeros(2, dtype=torch.float64)),
        (torch.zeros(3, dtype=torch.int64), torch.zeros(3, dtype=torch.int64)),
    ],
)
def test_loss_rejects_bad_data(x, xi) -> None:
    with pytest.raises(UserError):
        TwoMinimaLoss(MixturePotential(), x, xi)


def test_theta_must_be_one_dimensional() -> None:
    loss = TwoMinimaLoss(
        MixturePotential(), torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    )
    with pytest.raises(UserError):
        loss.grad(torch.zeros(4, 2, dtype=torch.float64))


@pytest.mark.parametrize(
    "theta_dtype, idx_dtype", [(torch.float64, torch.int32), (torch.float32, torch.int64)]
)
def test_compiled_minibatch_grad_matches_the_torch_path(theta_dtype, idx_dtype) -> None:
    """Both implementations, over chunk boundaries, against the mean of example gradients."""
    gen = torch.Generator().manual_seed(7)
    x, xi = sample_two_minima_data(500, translation_std=0.4, tilt_std=3.0, generator=gen)
    loss = TwoMinimaLoss(MixturePotential(), x, xi)
    chains, batch = 3000, 17  # 1927 chains per chunk: two chunks, the second partial
    theta = (6.0 * torch.rand(chains, 1, generator=gen, dtype=torch.float64) - 3.0).to(theta_dtype)
    theta[:4, 0] = torch.tensor([-40.0, 40.0, -900.0, 900.0])  # saturated sigmoids, both ways
    idx = torch.randint(0, 500, (chains, batch), generator=gen, dtype=idx_dtype)
    compiled = loss.minibatch_grad(theta, idx)
    reference = loss.example_grads(theta.double(), idx).mean(dim=1)
    assert compiled.dtype == torch.float64 and compiled.shape == (chains, 1)
    torch.testing.assert_close(compiled, reference, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(
        loss._minibatch.portable(theta[:, 0].double(), idx),
        reference,
        rtol=1e-12,
        atol=1e-9,
    )


def test_minibatch_grad_is_differentiable_through_theta() -> None:
    gen = torch.Generator().manual_seed(8)
    x, xi = sample_two_minima_data(50, translation_std=0.3, tilt_std=1.0, generator=gen)
    loss = TwoMinimaLoss(MixturePotential(), x, xi)
    theta = torch.tensor([[0.3], [1.9]], dtype=torch.float64, requires_grad=True)
    idx = torch.randint(0, 50, (2, 6), generator=gen)
    (loss.minibatch_grad(theta, idx).sum()).backward()
    # d/dtheta of the mean example gradient is the mean example second derivative.
    hess = loss.potential.d2(theta.detach() - x[idx]).mean(dim=1, keepdim=True)
    assert theta.grad is not None
    torch.testing.assert_close(theta.grad, hess, rtol=1e-10, atol=1e-12)
