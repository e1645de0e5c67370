"""One call that reads a sweep from the store and runs every analysis on it."""

from __future__ import annotations

import collections
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sgdtemp.analysis._records import (
    SHIFT_SUFFIX,
    RunView,
    load_runs,
    merge_shift,
    pick_sweep,
    shift_records,
)
from sgdtemp.analysis.decomposition import DecompositionTrend, decomposition_vs_temperature
from sgdtemp.analysis.invariance import InvarianceResult, temperature_invariance
from sgdtemp.analysis.regime import Regime, sweep_regime
from sgdtemp.analysis.trend import (
    CurvatureTrend,
    ShiftTrend,
    TestLossTrend,
    curvature_vs_temperature,
    shift_vs_temperature,
    test_loss_vs_temperature,
)
from sgdtemp.errors import UserError
from sgdtemp.files import json_safe
from sgdtemp.storage import Store

__all__ = ["Analysis", "analyze", "analyze_runs"]


@dataclass(frozen=True, eq=False)
class Analysis:
    """Everything the report shows about one sweep.

    Attributes:
        sweep: the sweep analyzed (None: every run of the store).
        runs: the training runs.
        counts: runs per status.
        invariance: collapse scores along iso-T, fixed-lr and fixed-B lines.
        test_loss: loss vs T per evaluation set, at a fair comparison point (the stationary
            expectations in a sweep trained until stationary).
        dropped: the cells left out of the trends, with the reason.
        curvature: Hessian trace and λ_max vs T.
        shift: the shift decomposition vs T per evaluation set.
        environments: the distinct environments the runs ran in, with their run counts.
        other_sweeps: the other sweeps in the store.
        regime: how the runs were trained (until stationary or for epochs), how many became
            stationary, λ and the rule.
        decomposition: the three curvature mechanisms vs T per eval set, from stationary runs.
    """

    sweep: str | None
    runs: tuple[RunView, ...]
    counts: Mapping[str, int]
    invariance: InvarianceResult
    test_loss: tuple[TestLossTrend, ...]
    dropped: tuple[str, ...]
    curvature: tuple[CurvatureTrend, ...]
    shift: tuple[ShiftTrend, ...]
    environments: tuple[Mapping[str, Any], ...]
    other_sweeps: tuple[str, ...] = ()
    regime: Regime | None = None
    decomposition: tuple[DecompositionTrend, ...] = ()

    @property
    def decomposition_rows(self) -> list[dict[str, Any]]:
        """Seed means of the decomposition per eval set and T (``analysis.json`` rows)."""
        return [row for d in self.decomposition for row in d.rows()]

    def to_dict(self) -> dict[str, Any]:
        """The analysis as JSON values (runs summarized, not their curves)."""
        regime = self.regime or sweep_regime(self.runs)
        return json_safe(
            {
                "sweep": self.sweep,
                "runs_total": regime.runs_total,
                "runs_stationary": regime.runs_stationary,
                "regime": regime.to_dict(),
                "decomposition": self.decomposition_rows,
                "counts": dict(self.counts),
                "runs": [
                    {
                        "key": r.key,
                        "status": r.status,
                        "lr": r.lr,
                        "batch_size": r.batch_size,
                        "temperature": r.temperature,
                        "seed": r.seed,
                        "lr_lambda_max": r.lr_lambda_max,
                        "final": {k: v[-1] if len(v) else None for k, v in r.loss.items()},
                        "stationary": r.stationary_reached if r.trained_to_stationarity else None,
                        "expectations": dict(r.expectations),
                    }
                    for r in self.runs
                ],
                "invariance": self.invariance,
                "test_loss": [
                    {**json_safe(t), "compared_at": t.compared_at} for t in self.test_loss
                ],
                "dropped": self.dropped,
                "curvature": self.curvature,
                "shift": self.shift,
                "decomposition_trends": self.decomposition,
                "environments": self.environments,
                "other_sweeps": self.other_sweeps,
            }
        )


def _environments(runs: tuple[RunView, ...]) -> tuple[Mapping[str, Any], ...]:
    counter: collections.Counter[str] = collections.Counter()
    first: dict[str, Mapping[str, Any]] = {}
    import json

    for r in runs:
        if not r.environment:
            continue
        text = json.dumps(r.environment, sort_keys=True)
        counter[text] += 1
        first.setdefault(text, r.environment)
    return tuple({**first[t], "runs": n} for t, n in counter.most_common())


def analyze_runs(
    runs: list[RunView], *, sweep: str | None = None, other_sweeps: tuple[str, ...] = ()
) -> Analysis:
    """Run every analysis on a list of runs (see :func:`analyze`)."""
    views = tuple(runs)
    counts = collections.Counter(r.status for r in views)
    test_loss, dropped = test_loss_vs_temperature(views)
    return Analysis(
        sweep=sweep,
        runs=views,
        counts=dict(counts),
        invariance=temperature_invariance(views),
        test_loss=tuple(test_loss),
        dropped=tuple(dropped),
        curvature=tuple(curvature_vs_temperature(views)),
        shift=tuple(shift_vs_temperature(views)),
        environments=_environments(views),
        other_sweeps=other_sweeps,
        regime=sweep_regime(views),
        decomposition=tuple(decomposition_vs_temperature(views)),
    )


def analyze(store: Store | str | os.PathLike[str], *, sweep: str | None = None) -> Analysis:
    """Read a sweep from the store and analyze it.

    Args:
        store: an open store or the path of its SQLite file (must exist).
        sweep: the sweep to analyze; default: the one with the most finished runs. Shift
            measurements stored in the sweep ``sweep + ":shift"`` are attached to its runs.

    Returns:
        The :class:`Analysis`.

    Raises:
        UserError: if the file is missing or the sweep is not in the store.

    Example:
        >>> import tempfile, pathlib
        >>> from sgdtemp.analysis.synthetic import SyntheticSweep, write_synthetic_sweep
        >>> db = pathlib.Path(tempfile.mkdtemp()) / "runs.db"
        >>> _ = write_synthetic_sweep(db, SyntheticSweep(seeds=(0, 1), epochs=4))
        >>> analysis = analyze(db)
        >>> analysis.sweep, len(analysis.runs)
        ('synthetic', 32)
        >>> [(ln.label, ln.differs) for ln in analysis.invariance.select("iso-T", "test")][:2]
        [('T=0.0004883', False), ('T=0.0009766', False)]
    """
    own = not isinstance(store, Store)
    db = Store(store, readonly=True) if not isinstance(store, Store) else store
    try:
        try:
            name = pick_sweep(db, sweep)
        except KeyError:
            known = ", ".join(db.sweeps()) or "none"
            raise UserError(f"--sweep {sweep!r} is not in {db.path}; sweeps: {known}") from None
        runs = load_runs(db, sweep=name) if name is not None else []
        if name is not None:
            runs = merge_shift(runs, shift_records(db, name))
        others = tuple(s for s in db.sweeps() if s != name and not s.endswith(SHIFT_SUFFIX))
    finally:
        if own:
            db.close()
    return analyze_runs(runs, sweep=name, other_sweeps=others)
