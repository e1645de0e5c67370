"""Curvature of a model's loss: matrix-free operators and randomized estimators (pure torch).

Operators know only how to multiply (``op @ v`` for a flat vector ``(d,)`` or a matrix of
columns ``(d, k)``); estimators accept anything with ``shape`` and ``@``, a dense tensor included,
so they are tested on matrices with known spectra. The split and the names follow curvlinops
(F. Dangel et al.), with small implementations of our own.
"""

from __future__ import annotations

from sgdtemp.curvature._base import (
    DEFAULT_SEED,
    DampedOperator,
    LinearOperatorLike,
    SupportsQuadraticForms,
    quadratic_forms,
)
from sgdtemp.curvature._model import ModelLoss, as_batches
from sgdtemp.curvature.ggn import GGNOperator
from sgdtemp.curvature.hessian import HessianOperator
from sgdtemp.curvature.inverse import CGResult, conjugate_gradient
from sgdtemp.curvature.lanczos import (
    Eigenpairs,
    LanczosResult,
    SpectralDensity,
    lanczos,
    spectral_density,
    top_eigenvalues,
)
from sgdtemp.curvature.noise import (
    GradientCovarianceOperator,
    NoiseCurvatureAlignment,
    noise_curvature_alignment,
)
from sgdtemp.curvature.trace import TraceEstimate, hutchinson_trace, hutchpp_trace, random_probes

__all__ = [
    "DEFAULT_SEED",
    # linear operators
    "LinearOperatorLike",
    "SupportsQuadraticForms",
    "quadratic_forms",
    "HessianOperator",
    "GGNOperator",
    "GradientCovarianceOperator",
    "DampedOperator",
    "ModelLoss",
    "as_batches",
    # inversion
    "conjugate_gradient",
    "CGResult",
    # spectral properties
    "lanczos",
    "top_eigenvalues",
    "spectral_density",
    "LanczosResult",
    "Eigenpairs",
    "SpectralDensity",
    # trace estimation
    "hutchinson_trace",
    "hutchpp_trace",
    "random_probes",
    "TraceEstimate",
    # noise and curvature
    "noise_curvature_alignment",
    "NoiseCurvatureAlignment",
]
