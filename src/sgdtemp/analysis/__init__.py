"""Analysis of stored sweeps: temperature invariance, test loss vs T, curvature, shift, claims.

Reads the results store (:mod:`sgdtemp.storage`) and returns frozen dataclasses; draws nothing
and writes nothing. :func:`analyze` runs everything on one sweep; :func:`all_claims` turns an
analysis (plus the two-minima and stationary-law checks) into the paper's claims with verdicts.
A sweep trained until stationary is judged on its runs' stationary expectations and on the
decomposition of its expected eval loss into the three curvature mechanisms.
"""

from __future__ import annotations

from sgdtemp.analysis._analyze import Analysis, analyze, analyze_runs
from sgdtemp.analysis._records import (
    MECHANISM_TERMS,
    SHIFT_SUFFIX,
    SHIFT_TERMS,
    Mechanisms,
    RunView,
    eval_kind,
    load_runs,
    mechanisms_view,
    merge_shift,
    pick_sweep,
    run_view,
    shift_records,
    shift_terms,
)
from sgdtemp.analysis._stats import SeedAnova, Slope, blocked_slope, mean_ci, seed_anova
from sgdtemp.analysis.claims import (
    CLAIM_COMPARED_AT,
    DECOMPOSITION_RTOL,
    DOES_NOT_HOLD,
    HOLDS,
    NOT_MEASURED,
    VERDICTS,
    Claim,
    all_claims,
    checks_claims,
    sweep_claims,
)
from sgdtemp.analysis.decomposition import (
    DECOMPOSITION_KEYS,
    MECHANISMS,
    DecompositionTrend,
    decomposition_vs_temperature,
)
from sgdtemp.analysis.invariance import (
    ALPHA,
    COLLAPSE_FACTOR,
    CellSummary,
    InvarianceResult,
    LineScore,
    temperature_invariance,
)
from sgdtemp.analysis.regime import Regime, rule_text, sweep_regime
from sgdtemp.analysis.trend import (
    COMPARED_AT,
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
    "Mechanisms",
    "mechanisms_view",
    "MECHANISM_TERMS",
    # regime: until stationary or for epochs
    "sweep_regime",
    "Regime",
    "rule_text",
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
    "COMPARED_AT",
    # the three curvature mechanisms
    "decomposition_vs_temperature",
    "DecompositionTrend",
    "MECHANISMS",
    "DECOMPOSITION_KEYS",
    # claims
    "all_claims",
    "sweep_claims",
    "checks_claims",
    "Claim",
    "VERDICTS",
    "HOLDS",
    "DOES_NOT_HOLD",
    "NOT_MEASURED",
    "CLAIM_COMPARED_AT",
    "DECOMPOSITION_RTOL",
    # statistics
    "seed_anova",
    "blocked_slope",
    "mean_ci",
    "SeedAnova",
    "Slope",
]
