r"""Equilibration planned before anything runs: each cell's predicted relaxation time in SGD steps.

For each (noise model, $T$, $B$) cell the slowest relaxation time of the SDE that SGD follows is
predicted from the exact mean first-passage times between the two minima
(:func:`~sgdtemp.theory.relaxation_time_1d`, at the effective temperature of the configured
minibatch sampling: $T$ with replacement, $T(N-B)/(N-1)$ reshuffled) and converted to SGD steps,
$t/\eta$. A cell runs ``relaxation_multiple`` of them (at least ``min_steps``) and discards the
first ``burn_in``: with the defaults, five relaxation times, after which the start's imprint on
the basin masses is below $e^{-5} \approx 0.007$ of its initial size. A cell that would need more
than the budget ``n_steps`` cannot be equilibrated and is said so up front; it is not simulated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sgdtemp.experiments.two_minima.config import TwoMinimaConfig
from sgdtemp.experiments.two_minima.landscape import NoiseModelLandscape
from sgdtemp.experiments.two_minima.sampling import sampling_temperature
from sgdtemp.theory import lr_for_temperature, relaxation_time_1d

__all__ = ["CellPlan", "plan_cells"]

# Records kept per chain at most: longer runs are thinned further than ``record_every``.
MAX_RECORDS = 2000


@dataclass(frozen=True)
class CellPlan:
    r"""One (noise model, T, B) cell as planned.

    Attributes:
        noise: the noise model.
        t_index: index of ``temperature`` in the noise model's grid.
        temperature: $T = \eta/B$.
        batch_size: $B$.
        lr: $\eta = TB$.
        t_effective: the temperature of the SDE and Fokker–Planck law that describe the
            configured sampling (:func:`~.sampling.sampling_temperature`): $T$ with replacement,
            $T\,(N-B)/(N-1)$ reshuffled.
        lr_sharpness: $\eta\lambda_{\max}$.
        relaxation_time: predicted slowest relaxation time in SDE time ($\infty$ past the float
            range).
        relaxation_steps: the same in SGD steps.
        steps: steps to run (``relaxation_multiple`` relaxation times, at least ``min_steps``,
            rounded up to whole records); ``None`` when more than the budget.
        record_every: records kept every this many steps.
        budget: the step budget ``n_steps``.
        seed: the cell's seed (SGD; the SDE uses ``seed + 1``).
    """

    noise: str
    t_index: int
    temperature: float
    batch_size: int
    lr: float
    t_effective: float
    lr_sharpness: float
    relaxation_time: float
    relaxation_steps: float
    steps: int | None
    record_every: int
    budget: int
    seed: int

    @property
    def feasible(self) -> bool:
        """Whether the planned run fits the budget (the cell is simulated)."""
        return self.steps is not None

    @property
    def key(self) -> str:
        """Prefix of the cell's arrays in ``data.npz``."""
        return f"{self.noise}_T{self.t_index}_B{self.batch_size}"

    def label(self) -> str:
        """A short label for progress and messages."""
        return f"{self.noise} T={self.temperature:g} B={self.batch_size}"

    def summary(self) -> dict[str, Any]:
        """JSON-ready plan (a cell's ``equilibration`` entry in ``summary.json``)."""
        finite = math.isfinite(self.relaxation_steps)
        return {
            "predicted_relaxation_time": self.relaxation_time if finite else None,
            "predicted_relaxation_steps": self.relaxation_steps if finite else None,
            "steps_planned": self.steps,
            "steps_run": self.steps or 0,
            "relaxation_times_run": (self.steps / self.relaxation_steps)
            if self.steps is not None
            else 0.0,
            "budget": self.budget,
            "feasible": self.feasible,
            "note": None
            if self.feasible
            else (
                f"cannot equilibrate within the budget: one relaxation time is "
                f"{_steps(self.relaxation_steps)} steps, the plan needs more than "
                f"n_steps = {self.budget}; not simulated"
            ),
        }


def _steps(n: float) -> str:
    return f"{n:.3g}" if math.isfinite(n) else "more than 1e300"


def plan_cells(
    config: TwoMinimaConfig, landscape: NoiseModelLandscape, model_index: int
) -> list[CellPlan]:
    """Plan every cell of one noise model (cheap: two quadratures per cell, no simulation)."""
    nm = config.noise_models[landscape.name]
    basins = landscape.basins
    minima = (float(basins.minimizers[0]), float(basins.minimizers[1]))
    plans = []
    for t_index, temp in enumerate(nm.temperatures):
        for batch_size in config.batch_sizes(temp):
            lr = lr_for_temperature(temp, batch_size)
            # The SDE and the Fokker-Planck law use the noise of the configured sampling.
            t_eff = sampling_temperature(
                temp, config.n_train, batch_size, replacement=config.replacement
            )
            relax = relaxation_time_1d(
                landscape.grid, landscape.grad, landscape.noise, t_eff, minima
            )
            relax_steps = relax / lr
            steps: int | None = None
            record_every = config.record_every
            if relax_steps * config.relaxation_multiple <= config.n_steps:
                needed = max(config.min_steps, math.ceil(config.relaxation_multiple * relax_steps))
                record_every = max(record_every, math.ceil(needed / MAX_RECORDS))
                steps = math.ceil(needed / record_every) * record_every
                if steps > config.n_steps:  # rounded up to whole records past the budget
                    steps = None
            plans.append(
                CellPlan(
                    noise=landscape.name,
                    t_index=t_index,
                    temperature=temp,
                    batch_size=batch_size,
                    lr=lr,
                    t_effective=t_eff,
                    lr_sharpness=lr * landscape.lambda_max,
                    relaxation_time=relax,
                    relaxation_steps=relax_steps,
                    steps=steps,
                    record_every=record_every,
                    budget=config.n_steps,
                    seed=config.seed * 1_000_003 + model_index * 7919 + t_index * 131 + batch_size,
                )
            )
    return plans
