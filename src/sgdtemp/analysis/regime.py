r"""The regime a sweep was trained in: until stationary (and how many runs got there) or for epochs.

The paper's claims about test loss are about the stationary law of SGD (theory.md §1.7, §2.7), so
a sweep whose spec has a ``[stop]`` table trains each run until a stated rule on the train
objective $F = L + \frac\lambda2\|\theta\|^2$ declares it stationary, within a budget of SDE time
(:mod:`sgdtemp.train.stationarity`). :func:`sweep_regime` counts the runs that got there, lists
those that did not, and states $\lambda$ and the rule, for the claims and the report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sgdtemp.analysis._records import RunView

__all__ = ["Regime", "sweep_regime", "rule_text"]


def _g(x: Any) -> str:
    return f"{x:g}" if isinstance(x, int | float) and not isinstance(x, bool) else str(x)


def rule_text(stop: Mapping[str, Any] | None) -> str:
    """The stationarity rule of a run's ``[stop]`` options in one sentence.

    Example:
        >>> print(rule_text({"max_sde_time": 60, "probe_every": 0.2, "probe_examples": 1024,
        ...     "window_fraction": 0.5, "reservoir": 8, "rule": {"window": 0.5, "batches": 16,
        ...     "alpha": 0.05, "kappa": 0.1}}))  # doctest: +NORMALIZE_WHITESPACE
        F = L + λ/2‖θ‖² on the first 1024 training examples every 0.2 of SDE time t = steps·η;
        stationary at the first check where the slope of the trailing 0.5 of the samples (16
        batch means) is not significant at α = 0.05 and its |slope| + t-quantile·stderr is
        below κ = 0.1 of |the mean rate since the start|; budget t ≤ 60; window after
        detection 0.5× the detection time, 8 iterates kept
    """
    if not stop:
        return "fixed number of epochs (no stationarity rule)"
    found = stop.get("rule")
    rule: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
    every = stop.get("probe_every")
    return (
        f"F = L + λ/2‖θ‖² on the first {_g(stop.get('probe_examples', '?'))} training examples "
        f"every {_g(every) if every is not None else 'budget/256'} of SDE time t = steps·η; "
        f"stationary at the first check where the slope of the trailing "
        f"{_g(rule.get('window', '?'))} of the samples ({_g(rule.get('batches', '?'))} batch "
        f"means) is not significant at α = {_g(rule.get('alpha', '?'))} and its |slope| + "
        f"t-quantile·stderr is below κ = {_g(rule.get('kappa', '?'))} of |the mean rate since "
        f"the start|; "
        f"budget t ≤ {_g(stop.get('max_sde_time', '?'))}; window after detection "
        f"{_g(stop.get('window_fraction', '?'))}× the detection time, "
        f"{_g(stop.get('reservoir', '?'))} iterates kept"
    )


@dataclass(frozen=True)
class Regime:
    """How a sweep's runs were trained and how many became stationary.

    Attributes:
        until_stationary: whether the runs were trained until stationary (a ``[stop]`` rule).
        runs_total: runs of the sweep, any status.
        runs_finished: runs that trained to the end without diverging.
        runs_stationary: runs that became stationary within their budget.
        not_stationary: one line per finished run that did not, with its SDE time and budget.
        weight_decay: the distinct weight decays λ of the runs, ascending.
        max_sde_time: the distinct budgets (SDE time), ascending.
        rule: the stopping rule in words (:func:`rule_text`, of the first run with one).
        stop: that run's ``[stop]`` options.
    """

    until_stationary: bool
    runs_total: int
    runs_finished: int
    runs_stationary: int
    not_stationary: tuple[str, ...] = ()
    weight_decay: tuple[float, ...] = ()
    max_sde_time: tuple[float, ...] = ()
    rule: str = ""
    stop: Mapping[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The regime in one or two sentences, for the report."""
        lam = ", ".join(f"{w:g}" for w in self.weight_decay) or "0"
        if len(self.weight_decay) > 1:
            lam += " (several values in one sweep: its trends in T mix them)"
        if not self.until_stationary:
            return (
                f"Trained for a fixed number of epochs (no stationarity rule), weight decay "
                f"λ = {lam}: no run is known to be stationary, so test losses are compared on a "
                f"train-loss plateau or at matched train loss."
            )
        return (
            f"Trained until stationary: {self.runs_stationary} of {self.runs_total} runs "
            f"became stationary within budget ({self.runs_finished} trained to the end); "
            f"weight decay λ = {lam}. Rule: {self.rule}."
        )

    def to_dict(self) -> dict[str, Any]:
        """The regime as JSON values."""
        return {
            "until_stationary": self.until_stationary,
            "runs_total": self.runs_total,
            "runs_finished": self.runs_finished,
            "runs_stationary": self.runs_stationary,
            "not_stationary": list(self.not_stationary),
            "weight_decay": list(self.weight_decay),
            "max_sde_time": list(self.max_sde_time),
            "rule": self.rule,
            "stop": dict(self.stop),
        }


def _not_stationary_line(run: RunView) -> str:
    s = run.stationary or {}
    t, budget = s.get("sde_time_run"), s.get("max_sde_time")
    ran = f"t = {t:.4g}" if isinstance(t, int | float) else "t = ?"
    of = f" of budget {budget:g}" if isinstance(budget, int | float) else ""
    return f"lr={run.lr:.4g} B={run.batch_size} seed {run.seed}: not stationary after {ran}{of}"


def sweep_regime(runs: Iterable[RunView]) -> Regime:
    """The regime of a sweep's runs (see :class:`Regime`).

    Example:
        >>> import numpy as np
        >>> def run(reached):
        ...     return RunView("k", "s", "ok", 0.1, 8, 0.0, 0.0125, 0, np.arange(3.0), {}, {},
        ...                    weight_decay=0.01, stationary={"reached": reached,
        ...                    "sde_time_run": 60.0, "max_sde_time": 60})
        >>> r = sweep_regime([run(True), run(False)])
        >>> r.runs_stationary, r.runs_total, r.not_stationary
        (1, 2, ('lr=0.1 B=8 seed 0: not stationary after t = 60 of budget 60',))
    """
    views = list(runs)
    finished = [r for r in views if r.finished_ok]
    until = any(r.trained_to_stationarity for r in views)
    reached = [r for r in finished if r.stationary_reached]
    missing = tuple(
        _not_stationary_line(r)
        for r in finished
        if r.trained_to_stationarity and not r.stationary_reached
    )
    budgets = sorted(
        {
            float(b)
            for r in views
            for b in [(r.stationary or r.stop or {}).get("max_sde_time")]
            if isinstance(b, int | float) and math.isfinite(b)
        }
    )
    first_stop = next((r.stop for r in views if r.stop), None)
    return Regime(
        until_stationary=until,
        runs_total=len(views),
        runs_finished=len(finished),
        runs_stationary=len(reached),
        not_stationary=missing,
        weight_decay=tuple(sorted({r.weight_decay for r in views})),
        max_sde_time=tuple(budgets),
        rule=rule_text(first_stop) if until else rule_text(None),
        stop=dict(first_stop or {}),
    )
