"""The reflected SDE: OU law, the conormal walls' uniform law, compiled vs batched path, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import Tensor

from sgdtemp.errors import UserError
from sgdtemp.landscapes import QuadraticLoss
from sgdtemp.landscapes._base import AbstractLandscape
from sgdtemp.landscapes.double_well_2d import double_well_2d_loss
from sgdtemp.simulate import run_reflected_sde

ALPHA = 1e-3  # KS / chi-square significance (fixed seeds: deterministic outcomes)
N_SE = 5.0  # moments of two independent simulations: within this many standard errors


class _Flat(AbstractLandscape):
    """No drift and a constant, strongly anisotropic noise covariance."""

    name = "flat"
    dim = 2

    def __init__(self, cov: np.ndarray) -> None:
        self.cov = torch.tensor(cov)

    def loss(self, theta: Tensor) -> Tensor:
        return torch.zeros(theta.shape[:-1], dtype=theta.dtype)

    def grad(self, theta: Tensor) -> Tensor:
        return torch.zeros_like(theta)

    def hessian(self, theta: Tensor) -> Tensor:
        return torch.zeros(*theta.shape, 2, dtype=theta.dtype)

    def noise_cov(self, theta: Tensor) -> Tensor:
        return self.cov.to(theta.dtype).expand(*theta.shape[:-1], 2, 2)

    def minimizers(self) -> Tensor:
        return torch.zeros(1, 2, dtype=torch.float64)


class _Wrapped(AbstractLandscape):
    """A landscape seen only through its methods: forces the batched (non-compiled) path."""

    def __init__(self, inner: AbstractLandscape) -> None:
        self.inner = inner
        self.name, self.dim = "wrapped", inner.dim

    def loss(self, theta: Tensor) -> Tensor:
        return self.inner.loss(theta)

    def grad(self, theta: Tensor) -> Tensor:
        return self.inner.grad(theta)

    def hessian(self, theta: Tensor) -> Tensor:
        return self.inner.hessian(theta)

    def noise_cov(self, theta: Tensor) -> Tensor:
        return self.inner.noise_cov(theta)

    def minimizers(self) -> Tensor:
        return self.inner.minimizers()


def test_ou_law_when_the_walls_hold_nothing() -> None:
    h, c, temp = 2.0, 3.0, 0.05
    xi = torch.tensor([[-math.sqrt(c)], [math.sqrt(c)]], dtype=torch.float64)
    quad = QuadraticLoss(torch.tensor([[h]], dtype=torch.float64), xi)
    run = run_reflected_sde(
        quad,
        torch.zeros(3000, 1, dtype=torch.float64),
        [(-2.0, 2.0)],
        temperature=temp,
        times=[1.0, 4.0],
        max_dt=0.005,
        max_move=0.05,
        generator=torch.Generator().manual_seed(0),
    )
    law = stats.norm(0.0, math.sqrt(temp * c / (2 * h)))
    assert stats.kstest(run.final[:, 0].numpy(), law.cdf).pvalue > ALPHA
    assert run.times.tolist() == [0.0, 1.0, 4.0] and int(run.steps.min()) >= 800


def test_conormal_walls_keep_the_uniform_law_of_pure_diffusion() -> None:
    """No drift, constant D with a cross term: no flux through the walls means a uniform law."""
    flat = _Flat(np.array([[1.0, 0.8], [0.8, 1.0]]))
    rng = np.random.default_rng(1)
    start = torch.from_numpy(rng.uniform(0.0, 1.0, size=(4000, 2)))
    run = run_reflected_sde(
        flat,
        start,
        [(0.0, 1.0), (0.0, 1.0)],
        temperature=1.0,
        times=[0.3],
        max_dt=4e-3,
        max_move=0.1,
        generator=torch.Generator().manual_seed(2),
    )
    counts = np.histogram2d(*run.final.numpy().T, bins=4, range=[[0, 1], [0, 1]])[0].ravel()
    assert stats.chisquare(counts).pvalue > ALPHA
    # normal (mirror) reflection is a different process: mass piles up in two corners
    mirror = run_reflected_sde(
        flat,
        start,
        [(0.0, 1.0), (0.0, 1.0)],
        temperature=1.0,
        times=[0.3],
        max_dt=4e-3,
        max_move=0.1,
        reflection="normal",
        generator=torch.Generator().manual_seed(2),
    )
    counts = np.histogram2d(*mirror.final.numpy().T, bins=4, range=[[0, 1], [0, 1]])[0].ravel()
    assert stats.chisquare(counts).pvalue < ALPHA


@pytest.mark.parametrize("reflection", ["conormal", "normal"])
def test_compiled_and_batched_paths_follow_one_law(reflection: str) -> None:
    """The double well with data noise (full, state-dependent C), near a wall, both paths."""
    land = double_well_2d_loss(
        256, translation_scale=0.2, generator=torch.Generator().manual_seed(0)
    )
    start = torch.tensor([[1.4, 0.5]], dtype=torch.float64).expand(3000, 2).clone()
    box = [(-2.0, 1.6), (-2.0, 2.0)]
    kwargs = dict(temperature=0.5, times=[0.03], max_dt=1e-3, max_move=0.04, reflection=reflection)
    fast = run_reflected_sde(land, start, box, generator=torch.Generator().manual_seed(3), **kwargs)
    slow = run_reflected_sde(
        _Wrapped(land), start, box, generator=torch.Generator().manual_seed(4), **kwargs
    )
    a, b = fast.final.numpy(), slow.final.numpy()
    assert a.max(0)[0] <= 1.6 and b.max(0)[0] <= 1.6
    se = np.sqrt((a.var(0) + b.var(0)) / a.shape[0])
    assert np.all(np.abs(a.mean(0) - b.mean(0)) < N_SE * se)
    cross = [np.mean((v[:, 0] - v[:, 0].mean()) * (v[:, 1] - v[:, 1].mean())) for v in (a, b)]
    spread = [np.cov(v.T) for v in (a, b)]
    for i in range(2):
        assert spread[0][i, i] == pytest.approx(spread[1][i, i], rel=0.15)
    assert cross[0] == pytest.approx(cross[1], rel=0.3, abs=0.002)
    assert abs(int(fast.steps.sum()) - int(slow.steps.sum())) < 0.05 * int(slow.steps.sum())


def test_same_seed_same_result() -> None:
    land = double_well_2d_loss(
        64, translation_scale=0.2, generator=torch.Generator().manual_seed(0)
    )
    start = land.minimizers().repeat(50, 1)

    def go() -> Tensor:
        return run_reflected_sde(
            land,
            start,
            [(-3.0, 3.0), (-3.0, 3.0)],
            temperature=0.3,
            times=[0.2, 0.4],
            max_dt=2e-3,
            max_move=0.04,
            generator=torch.Generator().manual_seed(7),
        ).thetas

    assert torch.equal(go(), go())


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"box": [(-1.0, 1.0)]}, "box"),
        ({"box": [(1.0, -1.0), (-1.0, 1.0)]}, "box"),
        ({"theta0": torch.full((3, 2), 5.0, dtype=torch.float64)}, "inside"),
        ({"times": [1.0, 0.5]}, "increasing"),
        ({"times": []}, "increasing"),
        ({"max_move": 0.0}, "max_move"),
        ({"reflection": "sticky"}, "reflection"),
        ({"temperature": -1.0}, "temperature"),
    ],
)
def test_bad_input(change: dict, match: str) -> None:
    args = dict(
        theta0=torch.zeros(3, 2, dtype=torch.float64),
        box=[(-1.0, 1.0), (-1.0, 1.0)],
        temperature=0.1,
        times=[1.0],
        max_dt=0.01,
        max_move=0.05,
        reflection="conormal",
    )
    args.update(change)
    land = _Flat(np.eye(2))
    theta0, box = args.pop("theta0"), args.pop("box")
    with pytest.raises(UserError, match=match):
        run_reflected_sde(land, theta0, box, generator=torch.Generator(), **args)
