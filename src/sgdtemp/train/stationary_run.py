r"""Training until stationary: one run's probes, stopping rule, averaging window and expectations.

A run with :class:`~sgdtemp.train.options.StationaryOptions` samples its train objective
$F = L + \frac\lambda2\|\theta\|^2$ (mean cross-entropy over a fixed probe subset: the first
``probe_examples`` training examples) every ``probe_every`` units of SDE time $t = \text{steps}
\cdot\eta$, so iso-temperature runs sample the same SDE times, and feeds it to the stated rule of
:mod:`sgdtemp.train.stationarity`. When the rule fires at $t_s$ the *stationary window* opens and
lasts ``window_fraction`` $\cdot\,t_s$ more SDE time (the relaxation the run needed is the
scale of its slowest correlation time); over it the run keeps the float64 running mean
$\bar\theta$ and a uniform reservoir of iterates (:mod:`sgdtemp.train.reservoir`) at every probe.
The run stops at the end of the epoch in which its window closes, or, never declared stationary,
at the end of the epoch that exhausts the budget ``max_sde_time`` (so budgets are whole epochs,
and iso-temperature runs, whose epochs last equal SDE time $NT$, get equal ones).

After the run, the *stationary expectations* $\mathbb E_p[\tilde L]$ of every evaluation set are
the mean losses over the reservoir iterates (a uniform sample of the window, so an unbiased
estimate of the window's time average, with its standard error), reported beside the losses at
$\bar\theta$ (:func:`expectations`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from sgdtemp.train.options import StationaryOptions
from sgdtemp.train.reservoir import Reservoir, RunningMean
from sgdtemp.train.stationarity import StationarityDetector

__all__ = ["StationaryTracker", "StationaryOutcome", "expectations"]


@dataclass(frozen=True)
class StationaryOutcome:
    r"""What a run's stationary phase produced.

    Attributes:
        summary: JSON values: ``reached``, ``sde_time`` and ``epoch`` of the detection,
            ``window`` (start and end SDE time, probes), the budget, the probe settings and the
            rule's statistics (the record's ``"stationary"`` entry).
        mean: $\bar\theta$ over the window, flat ``(d,)`` float64 (None when not reached).
        iterates: the reservoir's iterates, ``(k, d)`` (None when not reached).
        objective: time-averaged $F$ over the window (None when not reached).
    """

    summary: dict[str, Any]
    mean: Tensor | None = field(default=None, repr=False)
    iterates: Tensor | None = field(default=None, repr=False)
    objective: float | None = None


class StationaryTracker:
    """One run's probes, rule, window and reservoir (used by ``fit`` and ``fit_many`` alike).

    Args:
        options: the stationary options.
        lr: the run's learning rate (SDE time per step).
        steps_per_epoch: SGD steps per epoch.
        seed: seed of the reservoir (the run's own: the sample is reproducible).
    """

    def __init__(
        self, options: StationaryOptions, lr: float, steps_per_epoch: int, seed: int
    ) -> None:
        self.options = options
        self.lr = float(lr)
        dt = options.probe_every if options.probe_every is not None else options.default_probe
        self.every = max(1, round(dt / self.lr))  # steps between probes: equal SDE spacing
        self.steps_per_epoch = steps_per_epoch
        budget_steps = math.ceil(options.max_sde_time / self.lr)
        self.max_epochs = max(1, math.ceil(budget_steps / steps_per_epoch))
        self.detector = StationarityDetector(options.rule)
        self.mean = RunningMean()
        self.objective = RunningMean()
        self.reservoir = Reservoir(options.reservoir, seed=seed)
        self.detected: int | None = None  # step of the detection
        self.window_end: int | None = None  # step at which the window is complete

    def due(self, step: int) -> bool:
        """Whether ``step`` is a probe step."""
        return step % self.every == 0

    def observe(self, step: int, objective: float, theta: Callable[[], Tensor]) -> None:
        """Feed the probe of ``step``: ``objective`` is $F$, ``theta()`` the flat weights."""
        t = step * self.lr
        fired = self.detector.update(t, objective)
        if fired and self.detected is None:
            self.detected = step
            extra = max(self.every, math.ceil(self.options.window_fraction * step))
            self.window_end = step + extra
        if self.detected is not None:
            flat = theta()
            self.mean.update(flat)
            self.objective.update(objective)
            self.reservoir.offer(flat)

    def finished(self, step: int, epoch: int) -> bool:
        """Whether the run stops at the end of ``epoch`` (its window closed, or the budget)."""
        if self.window_end is not None and step >= self.window_end:
            return True
        return epoch >= self.max_epochs

    def outcome(self, step: int) -> StationaryOutcome:
        """The stationary phase's result after the run stopped at ``step``."""
        result = self.detector.result
        o = self.options
        summary: dict[str, Any] = {
            "reached": self.detected is not None,
            "sde_time": None if self.detected is None else self.detected * self.lr,
            "epoch": None if self.detected is None else self.detected / self.steps_per_epoch,
            "step": self.detected,
            "max_sde_time": o.max_sde_time,
            "sde_time_run": step * self.lr,
            "probe_every": self.every * self.lr,
            "probe_examples": o.probe_examples,
            "rule": {
                **result.summary(),
                "window": o.rule.window,
                "batches": o.rule.batches,
                "alpha": o.rule.alpha,
                "kappa": o.rule.kappa,
            },
        }
        if self.detected is None:
            return StationaryOutcome(summary)
        summary["window"] = {
            "start": self.detected * self.lr,
            "end": step * self.lr,
            "probes": self.mean.count,
            "reservoir": min(self.reservoir.size, self.reservoir.seen),
        }
        sample = self.reservoir.sample()
        return StationaryOutcome(
            summary, self.mean.mean, sample.iterates, float(self.objective.value)
        )


def expectations(
    evaluate_at: Callable[[Tensor, str], float],
    outcome: StationaryOutcome,
    names: Mapping[str, Any],
) -> dict[str, dict[str, float]]:
    r"""Stationary expectations $\mathbb E_p[\tilde L]$ per evaluation set, from the reservoir.

    Args:
        evaluate_at: ``(flat weights, set name) -> mean loss`` on that set's expectation subset.
        outcome: the run's stationary outcome (reached).
        names: the evaluation sets (``train`` included), in order.

    Returns:
        ``{set: {"loss": mean over the iterates, "stderr": its standard error,
        "at_mean": the loss at the window mean}}``.
    """
    assert outcome.iterates is not None and outcome.mean is not None
    out = {}
    for name in names:
        losses = torch.tensor(
            [evaluate_at(theta, name) for theta in outcome.iterates], dtype=torch.float64
        )
        k = losses.numel()
        stderr = float(losses.std(unbiased=True)) / math.sqrt(k) if k > 1 else math.nan
        out[name] = {
            "loss": float(losses.mean()),
            "stderr": stderr,
            "at_mean": evaluate_at(outcome.mean, name),
        }
    return out
