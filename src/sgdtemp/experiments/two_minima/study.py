"""The study's entry points: plan every cell, then run the cells that can equilibrate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sgdtemp.experiments.two_minima.cell import COMPARABLE_LR_SHARPNESS, HIST_BINS, run_cell
from sgdtemp.experiments.two_minima.checks import checks, iso_temperature
from sgdtemp.experiments.two_minima.config import TwoMinimaConfig, config_dict
from sgdtemp.experiments.two_minima.landscape import NoiseModelLandscape, build_landscape
from sgdtemp.experiments.two_minima.plan import CellPlan, plan_cells
from sgdtemp.experiments.two_minima.sampling import (
    regime_note,
    sampling_comparison,
    sampling_label,
)
from sgdtemp.landscapes import MixturePotential

__all__ = ["TwoMinimaPlan", "TwoMinimaResult", "plan_two_minima", "run_two_minima"]

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TwoMinimaPlan:
    """Every cell of a study as planned, with the landscapes the plan was computed on.

    Attributes:
        config: the study's parameters.
        landscapes: one per noise model, by name.
        cells: every (noise model, T, B) cell, in run order.
    """

    config: TwoMinimaConfig
    landscapes: dict[str, NoiseModelLandscape]
    cells: list[CellPlan]

    @property
    def simulated(self) -> list[CellPlan]:
        """The cells whose planned run fits the budget."""
        return [c for c in self.cells if c.feasible]

    @property
    def skipped(self) -> list[CellPlan]:
        """The cells that cannot equilibrate within the budget (not simulated)."""
        return [c for c in self.cells if not c.feasible]


@dataclass(frozen=True)
class TwoMinimaResult:
    """Outcome of :func:`run_two_minima`.

    Attributes:
        summary: the JSON-ready summary (``summary.json`` contract: ``landscape``, ``cells``,
            ``noise_models``, ``sampling`` (the scheme SGD was judged in),
            ``sampling_comparison`` (the other scheme, shown beside it, not judged),
            ``iso_temperature``, ``checks``).
        arrays: named NumPy arrays for ``data.npz`` (train/test pairs, density grids, histograms).
    """

    summary: dict[str, Any]
    arrays: dict[str, np.ndarray]


def plan_two_minima(config: TwoMinimaConfig) -> TwoMinimaPlan:
    """Draw the data, tabulate each landscape and plan every cell (no simulation).

    Args:
        config: the study's parameters.

    Returns:
        The plan: per cell the predicted relaxation time in SGD steps and the steps to run, or
        that the cell cannot equilibrate within ``config.n_steps``.
    """
    landscapes = {}
    cells = []
    for model_index, (name, nm) in enumerate(config.noise_models.items()):
        landscape = build_landscape(config, name, model_index, nm)
        landscapes[name] = landscape
        cells.extend(plan_cells(config, landscape, model_index))
    return TwoMinimaPlan(config=config, landscapes=landscapes, cells=cells)


def run_two_minima(
    config: TwoMinimaConfig,
    *,
    plan: TwoMinimaPlan | None = None,
    progress: Progress | None = None,
) -> TwoMinimaResult:
    """Run the two-minima study.

    Args:
        config: the study's parameters.
        plan: the plan of ``config`` (:func:`plan_two_minima`), when already made.
        progress: called with a short label after each simulated cell (for a progress bar).

    Returns:
        The summary (see :class:`TwoMinimaResult`) and the arrays for ``data.npz``.
    """
    if plan is None:
        plan = plan_two_minima(config)
    elif plan.config != config:
        raise ValueError("plan was made for another config")
    cells: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {}
    for name, landscape in plan.landscapes.items():
        arrays.update(landscape.arrays)
        grid = landscape.grid
        arrays[f"{name}_hist_edges"] = np.linspace(grid[0], grid[-1], HIST_BINS + 1)
    for cell_plan in plan.cells:
        landscape = plan.landscapes[cell_plan.noise]
        cell, cell_arrays = run_cell(config, landscape, cell_plan)
        cells.append(cell)
        arrays.update(cell_arrays)
        if progress is not None and cell_plan.feasible:
            progress(cell_plan.label())
    potential = MixturePotential(m=config.m, w=config.w, pi=config.pi)
    summary: dict[str, Any] = {
        "landscape": {
            "family": "two-minima",
            "m": list(config.m),
            "w": list(config.w),
            "pi": list(config.pi),
            "wide_component": int(potential.wide),
            "n_train": config.n_train,
            "n_test": config.n_test,
            "domain_shift": config.domain_shift,
        },
        "config": config_dict(config),
        "noise_models": {name: land.summary for name, land in plan.landscapes.items()},
        "plan": {
            "simulated": len(plan.simulated),
            "not_simulated": [{"cell": c.label(), **c.summary()} for c in plan.skipped],
        },
        "sampling": {
            "replacement": config.replacement,
            "sampling": sampling_label(config.replacement),
            "theory_regime": config.replacement,
            "note": regime_note(config.replacement),
        },
        "cells": cells,
    }
    summary["sampling_comparison"] = sampling_comparison(
        cells, config.replacement, COMPARABLE_LR_SHARPNESS
    )
    summary["iso_temperature"] = iso_temperature(cells)
    summary["checks"] = checks(summary)
    return TwoMinimaResult(summary=summary, arrays=arrays)
