r"""One descent to a minimum of a regularized model loss, shared by the shift and the mechanisms.

The objective is $F(\theta) = L(\theta) + \frac\lambda2\|\theta\|^2 + \frac\mu2\|\theta -
\theta_0\|^2$ (:class:`Objective`). :func:`descend` runs the chosen solver on it; when the model's
forward calls ReLU or max pooling (the objective is then only piecewise smooth), it follows a
smoothing continuation instead (:mod:`sgdtemp.shift._smoothing`). A descent that stops short of
its tolerance says why: with a gradient that jumps across a tiny step, the message names the
nonsmooth objective instead of the solver's symptom ("trust radius collapsed", "max_iters"), and
a descent that moved far from its start (more than a quarter of $\|x_0\|$) says so: its minimum,
if any, lies outside the neighbourhood where the quadratic picture of the shift applies.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from sgdtemp.curvature import DampedOperator, HessianOperator, ModelLoss
from sgdtemp.curvature._model import LossFn
from sgdtemp.shift._smoothing import SmoothedModel, continuation_minimize, nonsmooth_ops
from sgdtemp.shift._solvers import SOLVERS, MinimizeResult

__all__ = ["Objective", "Descent", "descend", "nonsmooth_evidence"]

# A gradient that changes by more than this factor times its Hessian prediction over a tiny step
# is taken for a jump (a kink crossed), not for curvature.
_JUMP_FACTOR = 10.0
# An unconverged descent that moved farther than this fraction of |x0| is reported as far.
_FAR = 0.25


class Objective:
    r"""$F(\theta) = L(\theta) + \frac\lambda2\|\theta\|^2 + \frac\mu2\|\theta - \theta_0\|^2$."""

    def __init__(self, loss: ModelLoss, weight_decay: float, mu: float, anchor: Tensor) -> None:
        self.loss = loss
        self.weight_decay = weight_decay
        self.mu = mu
        self.anchor = anchor
        self.num_hvps = 0

    def _reg(self, theta: Tensor) -> float:
        out = 0.5 * self.weight_decay * float((theta.double() ** 2).sum())
        if self.mu:
            out += 0.5 * self.mu * float(((theta - self.anchor).double() ** 2).sum())
        return out

    def value(self, theta: Tensor) -> float:
        r"""$F(\theta)$."""
        return self.loss.loss(theta) + self._reg(theta)

    def value_and_grad(self, theta: Tensor) -> tuple[float, Tensor]:
        r"""$F(\theta)$ and $\nabla F(\theta)$."""
        f, g = self.loss.value_and_grad(theta)
        g = g + self.weight_decay * theta
        if self.mu:
            g = g + self.mu * (theta - self.anchor)
        return f + self._reg(theta), g

    @property
    def damping(self) -> float:
        r"""$\lambda + \mu$, the regularizers' curvature."""
        return self.weight_decay + self.mu

    def hvp(self, theta: Tensor, p: Tensor) -> Tensor:
        r"""$\nabla^2 F(\theta)\,p$ for ``p`` ``(d,)``."""
        self.num_hvps += 1
        return self.loss.hvp(theta, p.unsqueeze(0))[0] + self.damping * p

    def hessian(self, theta: Tensor) -> DampedOperator:
        r"""$\nabla^2 F(\theta)$ as an operator."""
        return DampedOperator(HessianOperator.at(self.loss, theta), self.damping)


@dataclass(frozen=True)
class Descent:
    r"""A descent's outcome.

    Attributes:
        result: the final point; ``value`` is the (unsmoothed) objective there, ``grad_norm``
            the norm the tolerance was tested on (the last smoothing stage's, with smoothing).
        smoothing_beta: the last smoothing sharpness $\beta$, or None without smoothing.
        nonsmooth_grad_norm: $\|\nabla F\|$ of the unsmoothed objective at the final point.
    """

    result: MinimizeResult
    smoothing_beta: float | None
    nonsmooth_grad_norm: float


def nonsmooth_evidence(obj: Objective, x: Tensor, g: Tensor, target: float) -> str | None:
    r"""Whether the gradient jumps at ``x``: a tiny step along $-g$ against the Hessian's guess.

    Returns:
        A one-line explanation when the change of the gradient over a step of
        $\sqrt{\epsilon}\max(\|x\|, 1)$ exceeds both ``target`` and ten times
        $\|\nabla^2F\,\Delta x\|$, else None.
    """
    gnorm = float(torch.linalg.vector_norm(g))
    if gnorm == 0:
        return None
    step = math.sqrt(torch.finfo(x.dtype).eps) * max(float(torch.linalg.vector_norm(x)), 1.0)
    u = g / gnorm
    _, g2 = obj.value_and_grad(x - step * u)
    jump = float(torch.linalg.vector_norm(g2 - g))
    predicted = step * float(torch.linalg.vector_norm(obj.hvp(x, u)))
    if jump > target and jump > _JUMP_FACTOR * predicted:
        return (
            f"the objective is not smooth here: a step of {step:.2g} changes the gradient by "
            f"{jump:.2g} (a smooth one would by {predicted:.2g}), more than the tolerance "
            f"{target:.2g}"
        )
    return None


def descend(
    model: nn.Module,
    loss_fn: LossFn,
    loss: ModelLoss,
    data: Any,
    weight_decay: float,
    mu: float,
    anchor: Tensor,
    x0: Tensor,
    options: Any,
    callback: Callable[[int, float, float], None] | None = None,
) -> Descent:
    r"""Minimize $F$ from ``x0`` with ``options`` (a :class:`~sgdtemp.shift.ShiftOptions`).

    Args:
        model: the network (for the smoothed copies).
        loss_fn: its loss.
        loss: the :class:`~sgdtemp.curvature.ModelLoss` of ``model`` on ``data``.
        data: the data, for the smoothed objectives.
        weight_decay: $\lambda$.
        mu: $\mu$ (0 for none).
        anchor: $\theta_0$ of the proximal term.
        x0: the start ``(d,)``.
        options: solver, tolerances, budgets and the smoothing choice.
        callback: called after each iteration with (iteration, objective, gradient norm).

    Returns:
        The outcome.
    """
    o = options
    exact = Objective(loss, weight_decay, mu, anchor)
    budget: dict[str, Any] = {
        "grad_tol": o.grad_tol,
        "rel_grad_tol": o.rel_grad_tol,
        "max_iters": o.max_iters,
        "max_cg_iters": o.max_cg_iters,
        "max_seconds": o.max_seconds,
        "callback": callback,
    }
    smooth = False
    if o.smoothing == "auto":
        smooth = bool(nonsmooth_ops(model, loss.batches[0][0][:8])[0])
    if smooth:

        def objective(beta: float | None) -> Objective:
            if beta is None:
                return exact
            soft = ModelLoss(
                SmoothedModel(model, beta),
                loss_fn,
                data,
                batch_size=o.batch_size,
                hvp_mode=o.hvp_mode,
                taylor=False,
            )
            return Objective(soft, weight_decay, mu, anchor)

        cont = continuation_minimize(
            SOLVERS[o.method], objective, x0, tuple(o.smoothing_betas), **budget
        )
        return Descent(_far(cont.result, x0), cont.beta, cont.nonsmooth_grad_norm)
    res = SOLVERS[o.method](exact.value_and_grad, exact.value, exact.hvp, x0, **budget)
    if not res.converged:
        _, g = exact.value_and_grad(res.x)
        target = max(o.grad_tol, o.rel_grad_tol * res.initial_grad_norm)
        why = nonsmooth_evidence(exact, res.x, g, target)
        if why is not None:
            res = dataclasses.replace(res, message=f"{res.message}; {why}")
    return Descent(_far(res, x0), None, res.grad_norm)


def _far(res: MinimizeResult, x0: Tensor) -> MinimizeResult:
    """Add to an unconverged result's message when it went far from its start."""
    if res.converged:
        return res
    moved = float(torch.linalg.vector_norm((res.x - x0).double()))
    size = float(torch.linalg.vector_norm(x0.double()))
    if moved <= _FAR * max(size, 1.0):
        return res
    return dataclasses.replace(
        res,
        message=f"{res.message}; the descent went far from its start (|x - x0| = {moved:.3g} "
        f"against |x0| = {size:.3g}): the minimum is not in the quadratic neighbourhood",
    )
