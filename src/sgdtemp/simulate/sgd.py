r"""Minibatch SGD on a per-example loss, many independent chains at once.

Each chain runs real SGD on the $N$ training examples of an
:class:`~sgdtemp.landscapes.AbstractPerExampleLoss`, drawing its own minibatches
(:func:`~sgdtemp.simulate.minibatch_indices`), with optional heavy-ball momentum $\beta$:

$$v_{k+1} = \beta v_k + \hat g_{\mathcal B_k}(\theta_k),\qquad
\theta_{k+1} = \theta_k - \eta\,v_{k+1}.$$

In the SDE picture one step lasts $\eta/(1-\beta)$ of SDE time and the temperature is
$T = \eta/(B(1-\beta))$ (:func:`sgdtemp.theory.temperature`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sgdtemp.errors import UserError, require_positive
from sgdtemp.landscapes._base import AbstractPerExampleLoss
from sgdtemp.simulate._sampling import minibatch_indices
from sgdtemp.simulate._trajectory import Recorder, Trajectory, check_count, check_theta0

__all__ = ["run_sgd"]


def run_sgd(
    loss: AbstractPerExampleLoss,
    theta0: Tensor,
    *,
    lr: float,
    batch_size: int,
    n_steps: int,
    record_every: int = 1,
    replacement: bool = False,
    momentum: float = 0.0,
    generator: torch.Generator,
) -> Trajectory:
    r"""Run minibatch SGD from ``theta0``, one independent chain per row.

    Args:
        loss: the per-example loss whose examples are sampled.
        theta0: initial parameters, ``(chains, d)``; not modified.
        lr: learning rate $\eta > 0$.
        batch_size: $B$, with $1 \le B \le N$.
        n_steps: number of SGD steps, at least 1.
        record_every: keep every ``record_every``-th state (and the initial one).
        replacement: sample examples with replacement instead of reshuffling every epoch
            (see :func:`~sgdtemp.simulate.minibatch_indices` for both schemes).
        momentum: heavy-ball momentum $\beta \in [0, 1)$.
        generator: the only source of randomness; same seed, same result (bit for bit).

    Returns:
        The :class:`~sgdtemp.simulate.Trajectory`, with ``time_per_step`` $=\eta/(1-\beta)$.

    Raises:
        UserError: on invalid settings, before any step is taken.

    Example:
        >>> from sgdtemp.landscapes import QuadraticLoss
        >>> loss = QuadraticLoss(torch.eye(1, dtype=torch.float64),
        ...                      torch.randn(64, 1, dtype=torch.float64))
        >>> traj = run_sgd(loss, torch.zeros(8, 1, dtype=torch.float64), lr=0.1, batch_size=4,
        ...                n_steps=100, record_every=10, generator=torch.Generator().manual_seed(0))
        >>> traj.thetas.shape, traj.steps[-1].item()
        (torch.Size([11, 8, 1]), 100)
    """
    if not isinstance(loss, AbstractPerExampleLoss):
        raise UserError(f"loss must be a per-example loss, got {type(loss).__name__}")
    check_theta0(theta0, loss.dim)
    require_positive("lr", lr)
    check_count("batch_size", batch_size)
    if batch_size > loss.n_examples:
        raise UserError(
            f"batch_size {batch_size} is larger than the data set ({loss.n_examples} examples)"
        )
    check_count("n_steps", n_steps)
    check_count("record_every", record_every)
    if not (math.isfinite(momentum) and 0.0 <= momentum < 1.0):
        raise UserError(f"momentum must lie in [0, 1), got {momentum}")
    if not isinstance(generator, torch.Generator):
        raise UserError("generator must be a torch.Generator")

    theta = theta0.detach().clone(memory_format=torch.contiguous_format)
    recorder = Recorder(theta, n_steps, record_every)
    batches = minibatch_indices(
        loss.n_examples, theta.shape[0], batch_size, replacement=replacement, generator=generator
    )
    velocity = torch.zeros_like(theta) if momentum > 0.0 else None
    with torch.no_grad():
        for step in range(1, n_steps + 1):
            g = loss.minibatch_grad(theta, next(batches).to(theta.device))
            if velocity is None:
                theta.add_(g, alpha=-lr)
            else:
                velocity.mul_(momentum).add_(g)
                theta.add_(velocity, alpha=-lr)
            if step % record_every == 0:
                recorder.thetas[step // record_every] = theta
    return recorder.trajectory(theta, lr / (1.0 - momentum))
