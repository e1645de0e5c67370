"""Synthetic landscapes with analytic ground truth (pure math: no I/O, no randomness)."""

from __future__ import annotations

from sgdtemp.landscapes._base import AbstractLandscape, AbstractPerExampleLoss
from sgdtemp.landscapes.double_well_2d import DoubleWell2D, DoubleWell2DLoss, double_well_2d_loss
from sgdtemp.landscapes.quadratic import QuadraticLoss
from sgdtemp.landscapes.two_minima import MixturePotential, TwoMinimaLoss, sample_two_minima_data

__all__ = [
    # protocols
    "AbstractLandscape",
    "AbstractPerExampleLoss",
    # quadratic (Lyapunov / Ornstein–Uhlenbeck oracle)
    "QuadraticLoss",
    # two-minima laboratory (1-D mixture potential, translated and tilted by data)
    "MixturePotential",
    "TwoMinimaLoss",
    "sample_two_minima_data",
    # 2-D double well (isotropic Gibbs oracle; per-example version with anisotropic noise)
    "DoubleWell2D",
    "DoubleWell2DLoss",
    "double_well_2d_loss",
]
