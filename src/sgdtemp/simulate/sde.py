r"""Euler–Maruyama for the SGD diffusion $d\theta = -\nabla L\,dt + \sqrt{T\,C(\theta)}\,dW$.

One step is

$$\theta_{k+1} = \theta_k - \nabla L(\theta_k)\,dt + \sqrt{T\,dt}\;C(\theta_k)^{1/2} z_k,\qquad
z_k \sim \mathcal N(0, I),$$

with $C^{1/2}$ the square root for $d = 1$, the symmetric square root in closed form for $d = 2$
(:func:`noise_factor`), and for $d > 2$ the Cholesky factor (or the symmetric square root by
``eigh`` where $C$ is singular): any $S$ with $SS^\top = C$ gives the same law.
With ``dt`` equal to the SGD learning rate one SDE step stands for one SGD step at temperature
$T = \eta/B$ (:func:`sgdtemp.theory.temperature`).

A :class:`~sgdtemp.simulate.Tabulated1D` landscape is stepped by a fused kernel in grid units
(six table lookups and five multiply-adds per chain and step, into preallocated buffers); any
other landscape by its own ``grad`` and ``noise_cov``. Both consume the same normal draws, so an
exact landscape and its tabulation driven by the same generator seed follow the same noise path.
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

__all__ = ["run_sde", "noise_factor"]

# Normal draws generated at once (amortizes the per-call cost over many steps).
_NOISE_BLOCK_ELEMENTS = 1 << 18
# Normals are drawn in float32 (torch's vectorized sampler, about 10x faster than its float64 one;
# its tails are cut near 5.8 standard deviations, a mass below 1e-8) and promoted to float64.
_NOISE_DTYPE = torch.float32


def noise_factor(cov: Tensor) -> Tensor:
    r"""A factor $S$ with $SS^\top = C$ for positive semi-definite ``cov`` ``(n, d, d)``.

    For $d = 1$ the square root; for $d = 2$ the symmetric root in closed form,
    $\sqrt C = (C + sI)/\sqrt{\operatorname{tr}C + 2s}$ with $s = \sqrt{\det C}$
    (Cayley–Hamilton; exact for every PSD $C$, and 0 for $C = 0$), a few
    elementwise operations instead of a batched factorization; for $d > 2$ Cholesky, or the
    symmetric root by ``eigh`` where $C$ is singular.

    Example:
        >>> c = torch.tensor([[[2.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]])
        >>> s = noise_factor(c)
        >>> bool(torch.allclose(s @ s.mT, c, atol=1e-6))
        True
    """
    if cov.shape[-1] == 1:
        return cov.clamp_min(0.0).sqrt()
    if cov.shape[-1] == 2:
        a, b, c = cov[..., 0, 0], cov[..., 0, 1], cov[..., 1, 1]
        s = (a * c - b * b).clamp_min(0.0).sqrt()
        t = (a + c + 2.0 * s).sqrt()
        inv = torch.where(t > 0, 1.0 / t.clamp_min(1e-300), 0.0)
        root = torch.stack(
            [torch.stack([(a + s) * inv, b * inv], -1), torch.stack([b * inv, (c + s) * inv], -1)],
            -2,
        )
        return root
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
            kick = (noise_factor(cov) @ z.unsqueeze(-1)).squeeze(-1)
        theta.add_(drift, alpha=-self.dt).add_(kick, alpha=self.scale)

    def state(self) -> Tensor:
        return self.theta


class _TabulatedStepper:
    r"""Fused Euler–Maruyama on a :class:`Tabulated1D`, with the state kept in grid units.

    With row $r = \lfloor s\rfloor$ clamped to the table and $t = s - r$, one step is
    $s \leftarrow A_0 + t\,(A_1 + t\,(D_2 + t D_3)) + z\,(E_0 + t E_1)$, where
    $A_0 = r + D_0$ and $A_1 = 1 + D_1$ fold the old position into the table
    (:meth:`Tabulated1D.sde_table`). Per step that is two clamps, two conversions and a
    subtraction (locate), six 1-D gathers and five multiply-adds, all into preallocated buffers:
    with a few thousand chains the per-operation overhead, not the arithmetic, sets the cost.
    """

    def __init__(
        self, landscape: Tabulated1D, theta0: Tensor, temperature: float, dt: float
    ) -> None:
        self.landscape = landscape
        self.s = landscape.to_grid_units(theta0[:, 0].to(torch.float64)).contiguous()
        table = landscape.sde_table(temperature, dt).to(self.s.device)  # (6, n + 1)
        rows = torch.arange(table.shape[1], dtype=table.dtype, device=table.device)
        d0, d1, d2, d3, e0, e1 = table.unbind(0)
        # Six contiguous 1-D tables: gathered one by one, their outputs stay contiguous.
        self.tables = tuple(c.contiguous() for c in (d0 + rows, d1 + 1.0, d2, d3, e0, e1))
        self.last_index = table.shape[1] - 1
        self.last_row = float(self.last_index)
        self.dtype = theta0.dtype
        n = self.s.shape[0]
        new = self.s.new_empty
        self.row = torch.empty(n, dtype=torch.int32, device=self.s.device)  # int32: faster
        self.t, self.poly, self.sd = new(n), new(n), new(n)
        self.gathered = tuple(new(n) for _ in range(6))

    def step(self, z: Tensor) -> None:
        s, t, row, poly, sd = self.s, self.t, self.row, self.poly, self.sd
        a0, a1, d2, d3, e0, e1 = self.gathered
        torch.clamp(s, 0.0, self.last_row, out=t)
        row.copy_(t)  # truncation = floor on the clamped, non-negative values
        row.clamp_(0, self.last_index)  # a diverged (NaN) chain stays NaN instead of raising
        t.copy_(row)
        torch.sub(s, t, out=t)
        for table, out in zip(self.tables, self.gathered):
            torch.index_select(table, 0, row, out=out)
        torch.addcmul(d2, t, d3, out=poly)
        torch.addcmul(a1, t, poly, out=poly)
        torch.addcmul(e0, t, e1, out=sd)
        torch.addcmul(a0, sd, z.view(-1), out=sd)
        torch.addcmul(sd, t, poly, out=s)

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
    block = min(n_steps, max(1, _NOISE_BLOCK_ELEMENTS // (chains * d)))
    # Reused noise buffers: drawn in float32 blocks (same stream as one draw per block), promoted.
    drawn = torch.empty((block, chains, d), dtype=_NOISE_DTYPE, device=generator.device)
    noise = torch.empty((block, chains, d), dtype=torch.float64, device=theta0.device)
    with torch.no_grad():
        for start in range(0, n_steps, block):
            size = min(block, n_steps - start)
            torch.randn((size, chains, d), generator=generator, out=drawn[:size])
            noise[:size].copy_(drawn[:size])
            for k, z in enumerate(noise[:size].unbind(0)):
                stepper.step(z)
                step = start + k + 1
                if step % record_every == 0:
                    recorder.thetas[step // record_every] = stepper.state()
    return recorder.trajectory(stepper.state(), dt)
