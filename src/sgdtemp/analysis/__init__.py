"""Analysis of stored sweeps: temperature invariance, test loss vs T, curvature, shift, claims.

Reads the results store (:mod:`sgdtemp.storage`) and returns frozen dataclasses; draws nothing
and writes nothing. :func:`analyze` runs everything on one sweep; :func:`all_claims` turns an
analysis (plus the two-minima and stationary-law checks) into the paper's claims with verdicts.
"""

from __future__ import annotations

from sgdtemp.analysis._analyze import Analysis, analyze, analyze_runs
from sgdtemp.analysis._records import (
    SHIFT_SUFFIX,
    SHIFT_TERMS,
    RunView,
    eval_kind,
    load_runs,
    merge_shift,
    pick_sweep,
    run_view,
    shift_records,
    shift_terms,
)
from sgdtemp.analysis._stats import SeedAnova, Slope, blocked_slope, mean_ci, seed_anova
from sgdtemp.analysis.claims import (
    DOES_NOT_HOLD,
    HOLDS,
    NOT_MEASURED,
    VERDICTS,
    Claim,
    all_claims,
    checks_claims,
    sweep_claims,
)
from sgdtemp.analysis.invariance import (
    ALPHA,
    COLLAPSE_FACTOR,
    CellSummary,
    InvarianceResult,
    LineScore,
    temperature_invariance,
)
from sgdtemp.analysis.trend import (
    CurvatureTrend,
    ShiftTrend,
    TemperaturePoint,
    TestLossTrend,
    curvature_vs_temperature,
    has_plateau,
    shift_vs_temperature,
    stable_runs,
    test_loss_vs_temperature,
)

__all__ = [
    # entry points
    "analyze",
    "analyze_runs",
    "Analysis",
    # stored runs
    "RunView",
    "load_runs",
    "run_view",
    "pick_sweep",
    "merge_shift",
    "shift_terms",
    "shift_records",
    "eval_kind",
    "SHIFT_TERMS",
    "SHIFT_SUFFIX",
    # temperature invariance
    "temperature_invariance",
    "InvarianceResult",
    "LineScore",
    "CellSummary",
    "COLLAPSE_FACTOR",
    "ALPHA",
    # trends in T
    "test_loss_vs_temperature",
    "curvature_vs_temperature",
    "shift_vs_temperature",
    "stable_runs",
    "has_plateau",
    "TestLossTrend",
    "CurvatureTrend",
    "ShiftTrend",
    "TemperaturePoint",
    # claims
    "all_claims",
    "sweep_claims",
    "checks_claims",
    "Claim",
    "VERDICTS",
    "HOLDS",
    "DOES_NOT_HOLD",
    "NOT_MEASURED",
    # statistics
    "seed_anova",
    "blocked_slope",
    "mean_ci",
    "SeedAnova",
    "Slope",
]
