r"""The SGD diffusion in a box with reflecting walls, by Euler–Maruyama with adaptive steps.

$d\theta = -\nabla L\,dt + \sqrt{T\,C(\theta)}\,dW$ in the box, reflected at its walls. This is
the process whose stationary law a grid Fokker–Planck solver computes (its walls are part of the
model, :mod:`sgdtemp.theory.fokker_planck_2d`), and where the noise grows faster than the drift
away from the minima the walls and the regions near them matter: there a fixed step is either
wasteful near the minima or wrong far out (a step of $\sqrt{2\lVert D\rVert dt}$ that crosses the
box). So each chain takes its own step,

$$dt = \min\Bigl(dt_{\max},\ \frac{\delta^2}{2\lambda_{\max}(D)},\
\frac{\delta}{\lVert\nabla L\rVert}\Bigr),\qquad D = \tfrac T2 C,$$

moving about $\delta$ (``max_move``) or less per step, and each chain's clock stops exactly on
the record times (an Euler–Maruyama step of a state-dependent length is still a consistent step
of the diffusion; the error is first order in $\delta^2$ where the coefficients are smooth).
The 2-D double wells (linear in nine features) are stepped chain by chain by a compiled kernel
(:mod:`._reflected_kernels`), any other landscape by a batched loop through its own ``grad`` and
``noise_cov``; both follow the same rules (not the same normals).

**Walls.** A step that leaves the box is reflected in the wall, either along the *conormal*
$Dn$ (``"conormal"``, with $D$ at the step's start: the reflection in the metric $D^{-1}$, which
maps the Gaussian step onto itself; its law solves the Fokker–Planck equation with no flux
through the walls) or along the normal $n$ (``"normal"``: a plain mirror, as a projection onto
the box does). They differ wherever $D$ has a cross term at the wall.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from sgdtemp.errors import UserError, require_positive
from sgdtemp.landscapes._base import AbstractLandscape
from sgdtemp.landscapes.double_well_2d import DoubleWell2D, DoubleWell2DLoss
from sgdtemp.simulate._trajectory import check_theta0
from sgdtemp.simulate.sde import noise_factor

__all__ = ["ReflectedRun", "run_reflected_sde", "REFLECTIONS"]

REFLECTIONS = ("conormal", "normal")
_MAX_BOUNCES = 8  # reflections per step before a state is clamped into the box
# Landscapes linear in nine features (feature_model()): stepped chain by chain by a compiled kernel.
_FEATURE_LANDSCAPES = (DoubleWell2D, DoubleWell2DLoss)


@dataclass(frozen=True, eq=False)
class ReflectedRun:
    """States of independent chains at common record times (:func:`run_reflected_sde`).

    Attributes:
        times: record times, ``(R,)``; record 0 is the initial state at time 0.
        thetas: states at those times, ``(R, chains, d)``.
        steps: steps each chain took, ``(chains,)`` int64.
    """

    times: Tensor
    thetas: Tensor
    steps: Tensor

    @property
    def final(self) -> Tensor:
        """The states at the last record time, ``(chains, d)``."""
        return self.thetas[-1]


def _largest_eigenvalue(cov: Tensor) -> Tensor:
    """Largest eigenvalue of symmetric ``(n, d, d)`` matrices (closed form for d <= 2)."""
    d = cov.shape[-1]
    if d == 1:
        return cov[:, 0, 0]
    if d == 2:
        a, b, c = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
        return 0.5 * (a + c) + torch.sqrt(0.25 * (a - c) ** 2 + b * b)
    return torch.linalg.eigvalsh(cov)[:, -1]


def _reflect(theta: Tensor, cov: Tensor, lo: Tensor, hi: Tensor, conormal: bool) -> Tensor:
    """Reflect ``theta`` ``(n, d)`` into the box, along ``cov @ n`` or along ``n``."""
    for _ in range(_MAX_BOUNCES):
        above, below = theta > hi, theta < lo
        out = above | below
        if not bool(out.any()):
            return theta
        excess = torch.where(above, theta - hi, torch.where(below, theta - lo, 0.0))  # (n, d)
        if conormal:  # sum over the walls crossed of excess_a cov[:, :, a] / cov[:, a, a]
            diag = torch.diagonal(cov, dim1=-2, dim2=-1)  # (n, d)
            safe = out & (diag > 0)
            ratio = torch.where(safe, excess / diag.clamp_min(1e-300), 0.0)
            shift = (cov @ ratio.unsqueeze(-1)).squeeze(-1)
            theta = theta - 2.0 * (shift + torch.where(out & ~safe, excess, 0.0))
        else:
            theta = theta - 2.0 * excess
    return torch.minimum(torch.maximum(theta, lo), hi)


def run_reflected_sde(
    landscape: AbstractLandscape,
    theta0: Tensor,
    box: Sequence[tuple[float, float]],
    *,
    temperature: float,
    times: Sequence[float],
    max_dt: float,
    max_move: float,
    reflection: str = "conormal",
    generator: torch.Generator,
) -> ReflectedRun:
    r"""Simulate the SGD diffusion reflected in ``box`` with adaptive Euler–Maruyama steps.

    Args:
        landscape: the loss $L$ and noise model $C$.
        theta0: initial states inside the box, ``(chains, d)``; not modified.
        box: ``(low, high)`` per coordinate, ``d`` pairs.
        temperature: $T \ge 0$.
        times: record times, increasing, positive.
        max_dt: longest step.
        max_move: $\delta$, the typical distance a step may move (module docstring).
        reflection: ``"conormal"`` or ``"normal"`` (module docstring).
        generator: the only source of randomness; same seed, same result.

    Returns:
        The :class:`ReflectedRun`, with the initial states as record 0.

    Raises:
        UserError: on invalid settings, before any step is taken.

    Example:
        >>> from sgdtemp.landscapes import QuadraticLoss
        >>> quad = QuadraticLoss(torch.eye(1, dtype=torch.float64),
        ...                      torch.tensor([[-1.0], [1.0]], dtype=torch.float64))
        >>> run = run_reflected_sde(quad, torch.zeros(4000, 1, dtype=torch.float64), [(-3.0, 3.0)],
        ...     temperature=0.1, times=[5.0], max_dt=0.01, max_move=0.05,
        ...     generator=torch.Generator().manual_seed(0))
        >>> round(run.final.var().item(), 2)  # T C / (2 h) = 0.05; the walls hold nothing
        0.05
    """
    if not isinstance(landscape, AbstractLandscape):
        raise UserError(f"landscape must be an AbstractLandscape, got {type(landscape).__name__}")
    check_theta0(theta0, landscape.dim)
    dim = landscape.dim
    bounds = [tuple(float(v) for v in pair) for pair in box]
    if len(bounds) != dim or any(len(pair) != 2 for pair in bounds):
        raise UserError(f"box must give (low, high) for each of the {dim} coordinates")
    if not all(math.isfinite(a) and math.isfinite(b) and a < b for a, b in bounds):
        raise UserError(f"box {bounds} must have finite sides with low < high")
    lo = theta0.new_tensor([a for a, _ in bounds])
    hi = theta0.new_tensor([b for _, b in bounds])
    if bool(((theta0 < lo) | (theta0 > hi)).any()):
        raise UserError("theta0 must lie inside the box")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise UserError(f"temperature must be a finite number >= 0, got {temperature}")
    record = [float(t) for t in times]
    if not record or record[0] <= 0 or any(b <= a for a, b in zip(record, record[1:])):
        raise UserError("times must be positive and increasing")
    if not all(math.isfinite(t) for t in record):
        raise UserError("times must be finite")
    require_positive("max_dt", max_dt)
    require_positive("max_move", max_move)
    if reflection not in REFLECTIONS:
        raise UserError(
            f"unknown reflection {reflection!r}; choose one of {', '.join(REFLECTIONS)}"
        )
    if not isinstance(generator, torch.Generator):
        raise UserError("generator must be a torch.Generator")

    if isinstance(landscape, _FEATURE_LANDSCAPES) and theta0.device.type == "cpu":
        return _run_compiled(
            landscape,
            theta0,
            (lo, hi),
            temperature,
            record,
            max_dt,
            max_move,
            reflection,
            generator,
        )
    chains = theta0.shape[0]
    rec_times = theta0.new_tensor([0.0, *record])  # (R,)
    thetas = theta0.new_empty((len(rec_times), chains, dim))
    thetas[0] = theta0
    theta = theta0.detach().clone()
    clock = theta0.new_zeros(chains)
    next_rec = torch.ones(chains, dtype=torch.int64, device=theta0.device)
    steps = torch.zeros(chains, dtype=torch.int64, device=theta0.device)
    active = torch.arange(chains, device=theta0.device)
    conormal = reflection == "conormal"
    half_t = 0.5 * temperature
    last = len(rec_times) - 1
    with torch.no_grad():
        while active.numel() > 0:
            th, now, target = theta[active], clock[active], rec_times[next_rec[active]]
            drift = -landscape.grad(th)
            cov = landscape.noise_cov(th)  # (n, d, d)
            spread = (half_t * _largest_eigenvalue(cov)).clamp_min(0.0)
            speed = drift.norm(dim=-1)
            dt = torch.full_like(now, max_dt)
            dt = torch.minimum(dt, max_move**2 / (2.0 * spread).clamp_min(1e-300))
            dt = torch.minimum(dt, max_move / speed.clamp_min(1e-300))
            left = target - now
            lands = dt >= left
            dt = torch.where(lands, left, dt)
            z = torch.randn(th.shape, generator=generator, dtype=th.dtype, device=th.device)
            kick = (noise_factor(cov) @ z.unsqueeze(-1)).squeeze(-1)
            new = th + drift * dt.unsqueeze(-1) + kick * (temperature * dt).sqrt().unsqueeze(-1)
            new = _reflect(new, cov, lo, hi, conormal)
            theta[active] = new
            clock[active] = torch.where(lands, target, now + dt)
            steps[active] += 1
            if bool(lands.any()):
                done = active[lands]
                thetas[next_rec[done], done] = new[lands]
                next_rec[done] += 1
                active = active[next_rec[active] <= last]
    return ReflectedRun(times=rec_times, thetas=thetas, steps=steps)


def _run_compiled(
    landscape: DoubleWell2D | DoubleWell2DLoss,
    theta0: Tensor,
    box: tuple[Tensor, Tensor],
    temperature: float,
    record: list[float],
    max_dt: float,
    max_move: float,
    reflection: str,
    generator: torch.Generator,
) -> ReflectedRun:
    """:func:`run_reflected_sde` through the compiled kernel, normals from a seeded NumPy stream."""
    from sgdtemp.simulate._reflected_kernels import feature_reflected_em  # numba: on first use

    g, w, cov = landscape.feature_model()
    lo, hi = box
    rec_times = np.array([0.0, *record])
    start = theta0.detach().to(torch.float64).numpy()
    thetas = np.empty((rec_times.size, *start.shape))
    thetas[0] = start
    steps = np.zeros(start.shape[0], dtype=np.int64)
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    rng = np.random.default_rng(seed)
    sides = np.array([float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])])
    feature_reflected_em(
        np.ascontiguousarray(start),
        rec_times,
        sides,
        float(g),
        w,
        cov,
        float(temperature),
        float(max_dt),
        float(max_move),
        reflection == "conormal",
        rng,
        thetas,
        steps,
    )
    return ReflectedRun(
        times=torch.from_numpy(rec_times).to(theta0.dtype),
        thetas=torch.from_numpy(thetas).to(theta0.dtype),
        steps=torch.from_numpy(steps),
    )
