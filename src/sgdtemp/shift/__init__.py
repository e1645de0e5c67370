"""The train→test shift of minima: descend from the train minimum to the eval-set minimum.

Pure (no I/O): takes a model, a loss and data tensors, returns frozen dataclasses. See
:mod:`sgdtemp.shift.measure` for the shift of a minimum and the honest handling of cross-entropy
(weight-decay minimum or proximal shift), :mod:`sgdtemp.shift.mechanisms` for the decomposition of
a stationary run's expected eval loss into its three curvature mechanisms.
"""

from __future__ import annotations

from sgdtemp.shift._solvers import MinimizeResult, lbfgs_minimize, newton_cg_minimize
from sgdtemp.shift.measure import (
    OBJECTIVES,
    ShiftOptions,
    ShiftProjection,
    ShiftResult,
    measure_shift,
)
from sgdtemp.shift.mechanisms import TERMS, EvalMechanisms, MechanismsResult, measure_mechanisms
from sgdtemp.shift.reparam import ReparametrizationCheck, relu_rescaling, reparametrization_check

__all__ = [
    # the shift
    "measure_shift",
    "ShiftOptions",
    "ShiftResult",
    "ShiftProjection",
    "OBJECTIVES",
    # the three curvature mechanisms of a stationary run
    "measure_mechanisms",
    "MechanismsResult",
    "EvalMechanisms",
    "TERMS",
    # reparametrization check
    "reparametrization_check",
    "relu_rescaling",
    "ReparametrizationCheck",
    # solvers
    "newton_cg_minimize",
    "lbfgs_minimize",
    "MinimizeResult",
]
