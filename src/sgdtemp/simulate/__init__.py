"""Simulation of SGD and of its diffusion approximation on landscapes (pure math)."""

from __future__ import annotations

from sgdtemp.simulate._sampling import minibatch_indices
from sgdtemp.simulate._trajectory import Trajectory
from sgdtemp.simulate.reflected import ReflectedRun, run_reflected_sde
from sgdtemp.simulate.sde import run_sde
from sgdtemp.simulate.sgd import run_sgd
from sgdtemp.simulate.tabulated import Tabulated1D

__all__ = [
    # results
    "Trajectory",
    # minibatch SGD (real minibatches of a per-example loss)
    "run_sgd",
    "minibatch_indices",
    # diffusion approximation (Euler–Maruyama)
    "run_sde",
    "Tabulated1D",
    # the diffusion reflected in a box (adaptive steps)
    "run_reflected_sde",
    "ReflectedRun",
]
