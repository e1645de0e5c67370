r"""First passages: two-state rates from a relaxation rate, and escape times of simulated chains.

The simulation side of escape (how long chains take to leave a basin, and the rate an exponential
law fits to it) beside the two-state reduction of a metastable diffusion; the Eyring–Kramers law
they are compared with is in :mod:`sgdtemp.theory.escape`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from torch import Tensor

from sgdtemp.errors import UserError, require_positive

__all__ = ["two_state_rates", "FirstPassage", "first_passage_times", "exponential_rate"]

FloatArray = NDArray[np.float64]


def two_state_rates(relaxation_rate: float, probabilities: Sequence[float]) -> tuple[float, float]:
    r"""Rates $(k_{0\to1}, k_{1\to0})$ of a two-state reduction of a metastable diffusion.

    With basin masses $P_0 + P_1 = 1$ and slowest relaxation rate $\lambda_1$
    (:meth:`~sgdtemp.theory.fokker_planck_2d.FokkerPlanck2D.relaxation_rates`), detailed balance
    of the reduced chain gives $k_{0\to1} = \lambda_1 P_1$ and $k_{1\to0} = \lambda_1 P_0$.

    Example:
        >>> two_state_rates(1.0, [0.25, 0.75])
        (0.75, 0.25)
    """
    require_positive("relaxation_rate", relaxation_rate)
    p0, p1 = (float(v) for v in probabilities)
    total = p0 + p1
    return relaxation_rate * p1 / total, relaxation_rate * p0 / total


# ----------------------------------------------------------------------------- first passage


@dataclass(frozen=True)
class FirstPassage:
    """First-passage times of simulated chains.

    Attributes:
        times: first step at which each chain was seen in the target (``max_steps`` if never),
            ``(chains,)`` float64, in steps.
        hit: whether each chain reached the target, ``(chains,)`` bool.
        max_steps: steps simulated.
    """

    times: FloatArray
    hit: NDArray[np.bool_]
    max_steps: int


def first_passage_times(
    advance: Callable[[Tensor, int], Tensor],
    theta0: Tensor,
    in_target: Callable[[Tensor], Tensor],
    *,
    max_steps: int,
    check_every: int = 10,
) -> FirstPassage:
    r"""Run chains until they enter a target set and record when each first did.

    The chains are advanced ``check_every`` steps at a time (e.g. by one call of
    ``sgdtemp.simulate.run_sgd`` or ``run_sde`` that returns the final state) and tested at those
    times, so a passage is resolved to ``check_every`` steps and an excursion into the target
    shorter than that can be missed; all chains keep running until ``max_steps`` or until every
    chain has hit.

    Args:
        advance: ``(theta (chains, d), n_steps) -> theta (chains, d)``.
        theta0: starting points, ``(chains, d)``.
        in_target: ``theta (chains, d) -> (chains,) bool``.
        max_steps: steps at most.
        check_every: steps between tests.

    Returns:
        The :class:`FirstPassage` (times in steps).

    Raises:
        UserError: on non-positive ``max_steps`` or ``check_every``.

    Example:
        >>> import torch
        >>> fp = first_passage_times(
        ...     lambda th, n: th + n, torch.zeros(3, 1), lambda th: th[:, 0] >= 25, max_steps=100
        ... )
        >>> fp.times.tolist(), bool(fp.hit.all())
        ([30.0, 30.0, 30.0], True)
    """
    require_positive("max_steps", max_steps)
    require_positive("check_every", check_every)
    theta = theta0
    chains = theta0.shape[0]
    times = np.full(chains, float(max_steps))
    hit = np.zeros(chains, dtype=bool)
    done = 0
    while done < max_steps and not hit.all():
        n = min(check_every, max_steps - done)
        theta = advance(theta, n)
        done += n
        now = in_target(theta).cpu().numpy().astype(bool) & ~hit
        times[now] = done
        hit |= now
    return FirstPassage(times=times, hit=hit, max_steps=int(max_steps))


def exponential_rate(passage: FirstPassage, *, time_per_step: float = 1.0) -> tuple[float, float]:
    r"""Maximum-likelihood rate of exponential first-passage times with right-censoring.

    $\hat k = n_{\rm hit} / \sum_i \min(\tau_i, t_{\max})$ with standard error
    $\hat k/\sqrt{n_{\rm hit}}$.

    Args:
        passage: the first-passage record.
        time_per_step: SDE time per step ($\eta$ for SGD, ``dt`` for the SDE).

    Returns:
        ``(rate, standard_error)`` per unit time.

    Raises:
        UserError: if no chain reached the target.

    Example:
        >>> fp = FirstPassage(np.array([1.0, 3.0, 4.0]), np.array([True, True, False]), 4)
        >>> exponential_rate(fp)[0]
        0.25
    """
    n_hit = int(passage.hit.sum())
    if n_hit == 0:
        raise UserError("no chain reached the target; simulate longer")
    exposure = float(passage.times.sum()) * time_per_step
    rate = n_hit / exposure
    return rate, rate / math.sqrt(n_hit)


# ----------------------------------------------------------------------------- discrete time
