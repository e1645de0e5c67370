r"""Euler–Maruyama for the SGD diffusion $d\theta = -\nabla L\,dt + \sqrt{T\,C(\theta)}\,dW$.

One step is

$$\theta_{k+1} = \theta_k - \nabla L(\theta_k)\,dt + \sqrt{T\,dt}\;C(\theta_k)^{1/2} z_k,\qquad
z_k \sim \mathcal N(0, I),$$

with $C^{1/2}$ the square root for $d = 1$ and, for $d > 1$, the Cholesky factor (or the symmetric
square root by ``eigh`` where $C$ is singular): any $S$ with $SS^\top = C$ gives the same law.
With ``dt`` equal to the SGD learning rate one SDE step stands for one SGD step at temperature
$T = \eta/B$ (:func:`sgdtemp.theory.temperature`).

A :class:`~sgdtemp.simulate.Tabulated1D` landscape is stepped by a fused kernel in grid units
(a table lookup and six multiply-adds per chain and step); any other landscape by its own
``grad`` and ``noise_cov``. Both consume the same normal draws, so an exact landscape and its
tabulation driven by the same generator seed follow the same noise path.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from sgdtemp.errors import UserError, require_positive
from sgdtemp.landscapes._base import AbstractLandscape
from sgdtemp.simulate._trajectory import Recorder, Trajectory, check_count, check_theta0
from sgdtemp.simulate.tabulated import Tabulated1D

__all__ = ["run_sde"]

# Normal draws generated at once (amortizes the per-call cost over many steps).
_NOISE_BLOCK_ELEMENTS = 1 << 18
# Normals are drawn in float32 (torch's vectorized sampler, about 10x faster than its float64 one;
# its tails are cut near 5.8 standard deviations, a mass below 1e-8) and promoted to float64.
_NOISE_DTYPE = torch.float32


def _noise_factor(cov: Tensor) -> Tensor:
    r"""A factor $S$ with $SS^\top = C$: Cholesky, or the symmetric root where $C$ is singular."""
    factor, info = torch.linalg.cholesky_ex(cov)
    if bool((info != 0).any()):
        evals, evecs = torch.linalg.eigh(cov)
        factor = (evecs * evals.clamp_min(0.0).sqrt().unsqueeze(-2)) @ evecs.mT
    return factor


class _ExactStepper:
    """Euler–Maruyama through the landscape's own ``grad`` and ``noise_cov``."""

    def __init__(
        self, landscape: AbstractLandscape, theta0: Tensor, temperature: float, dt: float
    ) -> None:
        self.landscape = landscape
        self.theta = theta0.clone(memory_format=torch.contiguous_format)
        self.dt = dt
        self.scale = math.sqrt(temperature * dt)

    def step(self, z: Tensor) -> None:
        theta = self.theta
        drift = self.landscape.grad(theta)
        cov = self.landscape.noise_cov(theta)  # (chains, d, d)
        if theta.shape[1] == 1:
            kick = cov[:, 0].clamp_min(0.0).sqrt() * z
        else:
            kick = (_noise_factor(cov) @ z.unsqueeze(-1)).squeeze(-1)
        theta.add_(drift, alpha=-self.dt).add_(kick, alpha=self.scale)

    def state(self) -> Tensor:
        return self.theta


class _TabulatedStepper:
    """Fused Euler–Maruyama on a :class:`Tabulated1D`, with the state kept in grid units."""

    def __init__(
        self, landscape: Tabulated1D, theta0: Tensor, temperature: float, dt: float
    ) -> None:
        self.landscape = landscape
        self.s = landscape.to_grid_units(theta0[:, 0].to(torch.float64)).contiguous()
        # Six contiguous 1-D tables: gathered one by one, their outputs stay contiguous.
        table = landscape.sde_table(temperature, dt).to(self.s.device)
        self.tables = [column.contiguous() for column in table]
        self.last_row = table.shape[1] - 1
        self.dtype = theta0.dtype

    def step(self, z: Tensor) -> None:
        s = self.s
        row = s.to(torch.int64).clamp_(0, self.last_row)  # truncation = floor where it matters
        t = s - row
        d0, d1, d2, d3, e0, e1 = [column.index_select(0, row) for column in self.tables]
        inc = torch.addcmul(d2, t, d3)
        inc = torch.addcmul(d1, t, inc, out=inc)
        inc = torch.addcmul(d0, t, inc, out=inc)
        sd = torch.addcmul(e0, t, e1)
        inc.addcmul_(sd, z.view(-1))
        s.add_(inc)

    def state(self) -> Tensor:
        return self.landscape.from_grid_units(self.s).unsqueeze(1).to(self.dtype)


_Stepper = _ExactStepper | _TabulatedStepper
_STEPPERS: dict[type, Callable[..., _Stepper]] = {Tabulated1D: _TabulatedStepper}


def run_sde(
    landscape: AbstractLandscape,
    theta0: Tensor,
    *,
    temperature: float,
    dt: float,
    n_steps: int,
    record_every: int = 1,
    generator: torch.Generator,
) -> Trajectory:
    r"""Simulate $d\theta = -\nabla L\,dt + \sqrt{T C}\,dW$ by Euler–Maruyama, one chain per row.

    Args:
        landscape: the loss $L$ and noise model $C$ (a :class:`~sgdtemp.simulate.Tabulated1D`
            takes the fast path).
        theta0: initial states, ``(chains, d)``; not modified.
        temperature: $T \ge 0$ ($T = 0$ is gradient descent).
        dt: time step; ``dt = lr`` makes one step one SGD step.
        n_steps: number of steps, at least 1.
        record_every: keep every ``record_every``-th state (and the initial one).
        generator: the only source of randomness; same seed, same result (bit for bit).

    Returns:
        The :class:`~sgdtemp.simulate.Trajectory`, with ``time_per_step = dt``.

    Raises:
        UserError: on invalid settings, before any step is taken.

    Example:
        >>> from sgdtemp.landscapes import QuadraticLoss
        >>> quad = QuadraticLoss(torch.eye(1, dtype=torch.float64),
        ...                      torch.tensor([[-1.0], [1.0]], dtype=torch.float64))
        >>> traj = run_sde(quad, torch.zeros(2000, 1, dtype=torch.float64), temperature=0.1,
        ...                dt=0.01, n_steps=500, generator=torch.Generator().manual_seed(0))
        >>> round(traj.final.var().item(), 2)  # T C / (2 h) = 0.05
        0.05
    """
    if not isinstance(landscape, AbstractLandscape):
        raise UserError(f"landscape must be an AbstractLandscape, got {type(landscape).__name__}")
    check_theta0(theta0, landscape.dim)
    if not (math.isfinite(temperature) and temperature >= 0):
        raise UserError(f"temperature must be a finite number >= 0, got {temperature}")
    require_positive("dt", dt)
    check_count("n_steps", n_steps)
    check_count("record_every", record_every)
    if not isinstance(generator, torch.Generator):
        raise UserError("generator must be a torch.Generator")

    chains, d = theta0.shape
    stepper = _STEPPERS.get(type(landscape), _ExactStepper)(
        landscape, theta0.detach(), temperature, dt
    )
    recorder = Recorder(theta0.detach(), n_steps, record_every)
    block = max(1, _NOISE_BLOCK_ELEMENTS // (chains * d))
    with torch.no_grad():
        for start in range(0, n_steps, block):
            size = (min(block, n_steps - start), chains, d)
            noise = torch.randn(
                size, generator=generator, dtype=_NOISE_DTYPE, device=generator.device
            )
            noise = noise.to(device=theta0.device, dtype=torch.float64)
            for k, z in enumerate(noise.unbind(0)):
                stepper.step(z)
                step = start + k + 1
                if step % record_every == 0:
                    recorder.thetas[step // record_every] = stepper.state()
    return recorder.trajectory(stepper.state(), dt)
