"""The result of a simulation: recorded states of many independent chains."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sgdtemp.errors import UserError

__all__ = ["Trajectory"]


@dataclass(frozen=True, eq=False)
class Trajectory:
    r"""States of ``chains`` independent chains, recorded every ``record_every`` steps.

    Attributes:
        steps: iteration index of each record, ``(R,)`` int64; record 0 is the initial state.
        thetas: recorded states, ``(R, chains, d)``.
        final: the state after the last step, ``(chains, d)``.
        time_per_step: SDE time of one step: $\eta/(1-\beta)$ for SGD (learning rate over
            one minus momentum), ``dt`` for Euler–Maruyama.

    Example:
        >>> traj = Trajectory(
        ...     steps=torch.tensor([0, 10]), thetas=torch.zeros(2, 3, 1), final=torch.zeros(3, 1),
        ...     time_per_step=0.01,
        ... )
        >>> traj.times
        tensor([0.0000, 0.1000])
    """

    steps: Tensor
    thetas: Tensor
    final: Tensor
    time_per_step: float

    @property
    def times(self) -> Tensor:
        """SDE time of each record, ``steps * time_per_step``, ``(R,)``, dtype of ``thetas``."""
        return self.steps.to(self.thetas.dtype) * self.time_per_step


def check_theta0(theta0: Tensor, dim: int) -> None:
    """Raise :class:`UserError` unless ``theta0`` is a finite float ``(chains, dim)`` tensor."""
    if not isinstance(theta0, Tensor) or theta0.ndim != 2 or theta0.shape[1] != dim:
        shape = tuple(theta0.shape) if isinstance(theta0, Tensor) else type(theta0).__name__
        raise UserError(f"theta0 must have shape (chains, {dim}), got {shape}")
    if theta0.shape[0] < 1 or not theta0.is_floating_point():
        raise UserError("theta0 must be a floating-point tensor with at least one chain")
    if not bool(torch.isfinite(theta0).all()):
        raise UserError("theta0 must be finite")


def check_count(name: str, value: int) -> None:
    """Raise :class:`UserError` unless ``value`` is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{name} must be an integer >= 1, got {value!r}")


class Recorder:
    """Preallocated storage for every ``record_every``-th state, step 0 included."""

    def __init__(self, theta0: Tensor, n_steps: int, record_every: int) -> None:
        self.record_every = record_every
        n_records = n_steps // record_every + 1
        self.thetas = theta0.new_empty((n_records, *theta0.shape))
        self.thetas[0] = theta0
        self.steps = torch.arange(n_records, dtype=torch.int64) * record_every

    def trajectory(self, final: Tensor, time_per_step: float) -> Trajectory:
        """Wrap the records and the final state."""
        return Trajectory(
            steps=self.steps.to(final.device),
            thetas=self.thetas,
            final=final,
            time_per_step=time_per_step,
        )
