r"""Temperature invariance: do runs with the same $T = \eta/B$ behave the same (theory.md §2.4)?

At fixed $T$, equal epochs are equal SDE time ($t = eNT$), so the Fokker–Planck picture predicts
that loss-vs-epoch curves coincide along an *iso-T line* (cells $(\eta, B)$ with $\eta/B = T$) up
to seed noise, and differ along a *fixed-lr line* (same $\eta$, different $B$, hence different
$T$), the control that should **not** collapse. *Fixed-B lines* (different $T$ at one $B$) give
the spread across temperatures.

**Collapse score.** For a line with $k$ cells and $n$ common seeds, curves $y_{cs}(e)$ at epochs
$e = 1..E$, the one-way ANOVA of :func:`~sgdtemp.analysis._stats.seed_anova` compares the spread
of the cells' seed-mean curves with the seed-to-seed spread within cells. The score is

$$\kappa = \sqrt{\mathrm{MS_{cell}} / \mathrm{MS_{seed}}}
= \frac{\text{spread of the cell means}}{\text{seed spread}/\sqrt n},$$

about 1 when cells differ only by seed noise (below 1 when, as here, runs of one seed share
initial weights and data order, which makes the test conservative) and large when they differ;
its confidence interval is the square root of the F-ratio interval, and $p$ tests "no
difference". A line **differs**
when $\kappa > $ :data:`COLLAPSE_FACTOR` *and* $p <$ :data:`ALPHA` (a departure both large and
significant); otherwise it collapses.

**Which cells.** Scores use the cells in the *SDE regime*: every seed trained to the end and
$\eta\lambda_{\max} <$ :data:`LARGE_LR_LAMBDA` (= 1), with $\lambda_{\max}$ the measured top
Hessian eigenvalue of the trained model (cells without the measurement count as in the regime).
Cells with $1 \le \eta\lambda_{\max} < 2$ are *large-lr* cells, where the theory expects
$O(\eta\lambda)$ departures: the score with them included is reported beside
(``kappa_stable``). Cells with $\eta\lambda_{\max} \ge 2$ are *unstable*, and cells where a
seed diverged or failed are *excluded*; both are listed with their reason and never mixed into a
score.

**Where it breaks.** A cell whose mean curve sits more than :data:`OUTLIER_Z` noise units from the
line's mean is named, with the known causes that apply to it: $\eta\lambda_{\max}$ of
:data:`NOTABLE_LR_LAMBDA` or more (the $O(\eta\lambda)$ discretization term $\eta H\Sigma H$
of the discrete Lyapunov equation), $B$ close to $N$ (the without-replacement factor
$(N-B)/(N-1)$), or the smallest batch of the line (non-Gaussian noise).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from sgdtemp.analysis._records import RunView
from sgdtemp.analysis._stats import seed_anova

__all__ = [
    "CellSummary",
    "LineScore",
    "InvarianceResult",
    "temperature_invariance",
    "cell_key",
    "COLLAPSE_FACTOR",
    "ALPHA",
    "OUTLIER_Z",
    "UNSTABLE_LR_LAMBDA",
    "LARGE_LR_LAMBDA",
    "NOTABLE_LR_LAMBDA",
    "ROLES",
    "cell_role",
    "LARGE_BATCH_FRACTION",
    "LINE_KINDS",
]

#: A line differs when its spread between cells exceeds this many times the seed noise ...
COLLAPSE_FACTOR = 2.0
#: ... and the F test rejects "no difference" at this level (per line; the claims correct for
#: the number of lines where that matters, see :mod:`sgdtemp.analysis.claims`).
ALPHA = 0.05
#: A cell whose mean curve is this many noise units from the line mean is an outlier.
OUTLIER_Z = 2.0
#: Cells with η·λ_max at or above this are unstable (design.md: never mixed into claims).
UNSTABLE_LR_LAMBDA = 2.0
#: Cells with η·λ_max at or above this are outside the SDE regime (large-lr cells).
LARGE_LR_LAMBDA = 1.0
#: η·λ_max at or above this is named as a possible cause of a departure (O(ηλ) discretization).
NOTABLE_LR_LAMBDA = 0.5
#: B/N at or above this is named as a possible cause (without-replacement factor).
LARGE_BATCH_FRACTION = 0.05
#: Line kinds: what is fixed along the line.
LINE_KINDS = ("iso-T", "fixed-lr", "fixed-B")


def _round(x: float) -> float:
    """A float rounded to 6 significant digits (a grouping key robust to round-off)."""
    return float(f"{x:.6g}")


def cell_key(run: RunView) -> tuple[float, int]:
    """The cell of a run: ``(lr, batch_size)`` with the lr rounded to 6 significant digits."""
    return _round(run.lr), run.batch_size


#: Roles of a cell: in the SDE regime (scored), large lr, unstable, excluded.
ROLES = ("scored", "large-lr", "unstable", "excluded")


def cell_role(runs: Sequence[RunView]) -> tuple[str, str | None, float | None]:
    """The role of a cell (see :data:`ROLES`), the reason when not scored, and its η·λ_max.

    Example:
        >>> e = np.arange(3.0)
        >>> run = RunView("k", "s", "ok", 0.1, 8, 0.0, 0.0125, 0, e, {}, {}, lr_lambda_max=1.5)
        >>> cell_role([run])
        ('large-lr', 'lr·λ_max = 1.50 ≥ 1', 1.5)
    """
    bad = [r for r in runs if not r.finished_ok]
    lams = [r.lr_lambda_max for r in runs if r.lr_lambda_max is not None]
    lam = float(np.median(lams)) if lams else None
    if bad:
        reason = "; ".join(
            f"seed {r.seed} {r.status}"
            + (f" ({r.train_status})" if r.train_status and r.status == "unstable" else "")
            + (f": {r.reason.splitlines()[0][:80]}" if r.reason else "")
            for r in bad
        )
        return "excluded", reason, lam
    if lam is not None and lam >= UNSTABLE_LR_LAMBDA:
        return "unstable", f"lr·λ_max = {lam:.2f} ≥ {UNSTABLE_LR_LAMBDA:g}", lam
    if lam is not None and lam >= LARGE_LR_LAMBDA:
        return "large-lr", f"lr·λ_max = {lam:.2f} ≥ {LARGE_LR_LAMBDA:g}", lam
    return "scored", None, lam


@dataclass(frozen=True)
class CellSummary:
    """One (η, B) cell of a line.

    Attributes:
        lr: learning rate.
        batch_size: batch size.
        temperature: T.
        seeds: the seeds stored for the cell.
        role: ``"scored"`` (SDE regime: η·λ_max < 1), ``"large-lr"`` (1 ≤ η·λ_max < 2: in
            ``kappa_stable`` only), ``"unstable"`` (η·λ_max ≥ 2) or ``"excluded"`` (a seed
            diverged, failed or is not finished).
        reason: why a cell is not scored.
        lr_lambda_max: median η·λ_max over seeds (None when not measured).
        batch_fraction: B/N (None when N is unknown).
        deviation: distance of the cell's mean curve from the line mean in noise units (NaN
            when the line is not scored).
    """

    lr: float
    batch_size: int
    temperature: float
    seeds: tuple[int, ...]
    role: str
    reason: str | None
    lr_lambda_max: float | None
    batch_fraction: float | None
    deviation: float = math.nan


@dataclass(frozen=True)
class LineScore:
    """The collapse score of one line on one metric.

    Attributes:
        kind: ``"iso-T"``, ``"fixed-lr"`` or ``"fixed-B"``.
        value: the fixed quantity (T, lr or B).
        metric: the evaluation set whose loss curves are compared (``train``, ``test``, ...).
        cells: every cell of the line, in increasing batch size (temperature for fixed-B).
        n_seeds: seeds common to the scored cells.
        kappa: collapse score over the loss-vs-epoch curves of the scored cells (NaN when not
            scored).
        kappa_ci: its confidence interval.
        p_value: p of "no difference between cells" for the curves.
        kappa_final: collapse score of the final loss alone.
        kappa_final_ci: its confidence interval.
        spread_cells: standard deviation across scored cells of the seed-mean final loss.
        spread_seed: pooled standard deviation across seeds of the final loss within cells.
        kappa_stable: the curve score with the large-lr cells (1 ≤ η·λ_max < 2) included (NaN
            when there are none, or too few cells).
        differs: True when κ > COLLAPSE_FACTOR and p < ALPHA; False when the line collapses;
            None when not scored.
        why: one line: why it was not scored, or which cells break it and the possible causes.
        differs_stable: whether the line differs with the large-lr cells included (None: not
            scored that way).
    """

    kind: str
    value: float
    metric: str
    cells: tuple[CellSummary, ...]
    n_seeds: int
    kappa: float
    kappa_ci: tuple[float, float]
    p_value: float
    kappa_final: float
    kappa_final_ci: tuple[float, float]
    spread_cells: float
    spread_seed: float
    kappa_stable: float
    differs: bool | None
    why: str
    differs_stable: bool | None = None

    @property
    def scored_cells(self) -> tuple[CellSummary, ...]:
        """The cells in the SDE regime, which enter the score."""
        return tuple(c for c in self.cells if c.role == "scored")

    @property
    def label(self) -> str:
        """E.g. ``"T=0.00195"`` or ``"lr=0.0625"`` or ``"B=32"``."""
        name = {"iso-T": "T", "fixed-lr": "lr", "fixed-B": "B"}[self.kind]
        value = f"{int(self.value)}" if self.kind == "fixed-B" else f"{self.value:.4g}"
        return f"{name}={value}"


@dataclass(frozen=True)
class InvarianceResult:
    """Collapse scores of every line of a sweep.

    Attributes:
        lines: one :class:`LineScore` per line and metric.
        metrics: the metrics scored.
        collapse_factor: :data:`COLLAPSE_FACTOR` in force.
        alpha: :data:`ALPHA` in force.
    """

    lines: tuple[LineScore, ...]
    metrics: tuple[str, ...]
    collapse_factor: float = COLLAPSE_FACTOR
    alpha: float = ALPHA

    def select(self, kind: str, metric: str | None = None) -> list[LineScore]:
        """The lines of one kind (and metric)."""
        return [
            ln for ln in self.lines if ln.kind == kind and (metric is None or ln.metric == metric)
        ]


# ----------------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class _Cell:
    lr: float
    batch_size: int
    temperature: float
    runs: tuple[RunView, ...]
    role: str
    reason: str | None
    lr_lambda_max: float | None
    batch_fraction: float | None

    def summary(self, deviation: float = math.nan) -> CellSummary:
        return CellSummary(
            lr=self.lr,
            batch_size=self.batch_size,
            temperature=self.temperature,
            seeds=tuple(sorted(r.seed for r in self.runs)),
            role=self.role,
            reason=self.reason,
            lr_lambda_max=self.lr_lambda_max,
            batch_fraction=self.batch_fraction,
            deviation=deviation,
        )


def _make_cell(runs: Sequence[RunView]) -> _Cell:
    first = runs[0]
    role, reason, lr_lam = cell_role(runs)
    ns = [r.n_train for r in runs if r.n_train]
    return _Cell(
        lr=_round(first.lr),
        batch_size=first.batch_size,
        temperature=first.temperature,
        runs=tuple(sorted(runs, key=lambda r: r.seed)),
        role=role,
        reason=reason,
        lr_lambda_max=lr_lam,
        batch_fraction=first.batch_size / max(ns) if ns else None,
    )


def _cells(runs: Iterable[RunView]) -> list[_Cell]:
    by_cell: dict[tuple[float, int], list[RunView]] = {}
    for run in runs:
        if run.status in ("pending", "running"):
            continue
        by_cell.setdefault(cell_key(run), []).append(run)
    return [_make_cell(v) for _, v in sorted(by_cell.items())]


def _lines(cells: Sequence[_Cell]) -> list[tuple[str, float, list[_Cell]]]:
    groups: dict[tuple[str, float], list[_Cell]] = {}
    for c in cells:
        groups.setdefault(("iso-T", _round(c.temperature)), []).append(c)
        groups.setdefault(("fixed-lr", c.lr), []).append(c)
        groups.setdefault(("fixed-B", float(c.batch_size)), []).append(c)
    out = []
    for (kind, value), members in groups.items():
        if len(members) < 2:
            continue
        order = (lambda c: c.temperature) if kind == "fixed-B" else (lambda c: c.batch_size)
        out.append((kind, value, sorted(members, key=order)))
    kind_order = {k: i for i, k in enumerate(LINE_KINDS)}
    out.sort(key=lambda t: (kind_order[t[0]], t[1]))
    return out


# ------------------------------------------------------------------------------- scoring


def _values(cells: Sequence[_Cell], metric: str) -> tuple[np.ndarray, list[int]] | tuple[None, str]:
    """Curves ``(k, n, E + 1)`` over the seeds common to all cells, or (None, why not)."""
    seeds = set.intersection(*(set(r.seed for r in c.runs) for c in cells))
    if len(seeds) < 2:
        return None, f"fewer than 2 seeds common to its {len(cells)} cells"
    order = sorted(seeds)
    curves = []
    for c in cells:
        by_seed = {r.seed: r for r in c.runs}
        row = []
        for s in order:
            curve = by_seed[s].loss.get(metric)
            if curve is None:
                return None, f"no {metric} curve"
            row.append(curve)
        curves.append(row)
    length = min(len(c) for row in curves for c in row)
    if length < 2:
        return None, "fewer than 2 evaluated epochs"
    arr = np.array([[c[:length] for c in row] for row in curves], dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        return None, f"non-finite {metric} losses"
    return arr, order


def _causes(cell: _Cell, line_cells: Sequence[_Cell]) -> list[str]:
    causes = []
    if cell.lr_lambda_max is not None and cell.lr_lambda_max >= NOTABLE_LR_LAMBDA:
        causes.append(f"lr·λ_max = {cell.lr_lambda_max:.2f} (O(ηλ) discretization)")
    if cell.batch_fraction is not None and cell.batch_fraction >= LARGE_BATCH_FRACTION:
        causes.append(f"B/N = {cell.batch_fraction:.2f} (without-replacement factor)")
    if cell.batch_size == min(c.batch_size for c in line_cells) and len(line_cells) > 2:
        causes.append("smallest batch (non-Gaussian noise)")
    largest = cell.lr == max(c.lr for c in line_cells)
    if largest and not causes and cell.lr_lambda_max is None:
        causes.append("largest lr of the line (O(ηλ) discretization; λ_max not measured)")
    return causes


def _empty(kind: str, value: float, metric: str, members: Sequence[_Cell], why: str) -> LineScore:
    nan2 = (math.nan, math.nan)
    return LineScore(
        kind=kind,
        value=value,
        metric=metric,
        cells=tuple(c.summary() for c in members),
        n_seeds=0,
        kappa=math.nan,
        kappa_ci=nan2,
        p_value=math.nan,
        kappa_final=math.nan,
        kappa_final_ci=nan2,
        spread_cells=math.nan,
        spread_seed=math.nan,
        kappa_stable=math.nan,
        differs=None,
        why=why,
    )


def _differs(kappa: float, p_value: float) -> bool:
    return bool(kappa > COLLAPSE_FACTOR and p_value < ALPHA)


def _stable_score(
    kind: str, members: Sequence[_Cell], scored: Sequence[_Cell], metric: str
) -> tuple[float, bool | None, str]:
    """κ with the large-lr cells included, whether that differs, and a phrase for ``why``."""
    stable = [c for c in members if c.role in ("scored", "large-lr")]
    if len(stable) == len(scored) or len(stable) < 2:
        return math.nan, None, ""
    got = _values(stable, metric)
    if got[0] is None:
        return math.nan, None, ""
    anova = seed_anova(got[0][:, :, 1:])
    kappa = math.sqrt(anova.f)
    differs = _differs(kappa, anova.p_value)
    large = ", ".join(f"B={c.batch_size}" for c in stable if c.role == "large-lr")
    phrase = f"; with the large-lr cells ({large}) κ = {kappa:.2f}"
    if differs and kind == "iso-T":
        phrase += ": differs (the O(ηλ) breakdown)"
    return kappa, differs, phrase


def _score_line(kind: str, value: float, members: Sequence[_Cell], metric: str) -> LineScore:
    scored = [c for c in members if c.role == "scored"]
    left_out = [f"B={c.batch_size} ({c.reason})" for c in members if c.role != "scored"]
    note = f"; left out: {', '.join(left_out)}" if left_out else ""
    kappa_stable, differs_stable, stable_note = _stable_score(kind, members, scored, metric)
    if len(scored) < 2:
        why = f"fewer than 2 cells in the SDE regime{note}{stable_note}"
        return replace(
            _empty(kind, value, metric, members, why),
            kappa_stable=kappa_stable,
            differs_stable=differs_stable,
        )
    got = _values(scored, metric)
    if got[0] is None:
        return _empty(kind, value, metric, members, f"{got[1]}{note}")
    arr, seeds = got
    curves = arr[:, :, 1:]  # epoch 0 is the shared initialization of each seed
    anova = seed_anova(curves)
    final = seed_anova(arr[:, :, -1])
    n = len(seeds)
    kappa = math.sqrt(anova.f)
    means = curves.mean(axis=1)  # (k, E)
    noise = math.sqrt(anova.ms_seed / n) if anova.ms_seed > 0 else math.nan
    dev = np.sqrt(((means - means.mean(axis=0)) ** 2).mean(axis=1)) / noise
    deviation = {id(c): float(d) for c, d in zip(scored, dev)}
    differs = _differs(kappa, anova.p_value)
    if differs and kind != "iso-T":
        temps = [c.temperature for c in scored]
        why = f"differs: T changes ×{max(temps) / min(temps):.3g} along the line"
    elif differs:
        outliers = [c for c in scored if deviation[id(c)] > OUTLIER_Z]
        parts = []
        for c in outliers or [scored[int(np.argmax(dev))]]:
            causes = _causes(c, scored)
            parts.append(
                f"B={c.batch_size}, lr={c.lr:.4g} is {deviation[id(c)]:.1f} noise units off"
                + (f": {'; '.join(causes)}" if causes else ": no listed cause")
            )
        why = "breaks at " + " | ".join(parts)
    else:
        why = "collapses within seed noise"
    final_vals = arr[:, :, -1]
    return LineScore(
        kind=kind,
        value=value,
        metric=metric,
        cells=tuple(c.summary(deviation.get(id(c), math.nan)) for c in members),
        n_seeds=n,
        kappa=kappa,
        kappa_ci=(math.sqrt(anova.ratio_ci[0]), math.sqrt(anova.ratio_ci[1])),
        p_value=anova.p_value,
        kappa_final=math.sqrt(final.f),
        kappa_final_ci=(math.sqrt(final.ratio_ci[0]), math.sqrt(final.ratio_ci[1])),
        spread_cells=float(final_vals.mean(axis=1).std(ddof=1)),
        spread_seed=float(math.sqrt(final_vals.var(axis=1, ddof=1).mean())),
        kappa_stable=kappa_stable,
        differs=differs,
        why=why + note + stable_note,
        differs_stable=differs_stable,
    )


def temperature_invariance(
    runs: Iterable[RunView], *, metrics: Sequence[str] | None = None
) -> InvarianceResult:
    """Collapse scores along iso-T, fixed-lr and fixed-B lines (module docstring).

    Args:
        runs: the runs of one sweep.
        metrics: the evaluation sets to score (default: ``train`` and ``test`` where present,
            else every set with curves).

    Returns:
        The :class:`InvarianceResult`.

    Example:
        >>> from sgdtemp.analysis._records import RunView
        >>> def run(lr, b, seed, rate):
        ...     e = np.arange(6.0)
        ...     noise = 0.01 * np.random.default_rng(seed * 1000 + b).normal(size=6)
        ...     return RunView("k", "s", "ok", lr, b, 0.0, lr / b, seed, e,
        ...                    {"train": np.exp(-rate * e) + noise}, {})
        >>> runs = [run(0.01 * b, b, s, 0.5) for b in (8, 16, 32) for s in (0, 1, 2)]
        >>> runs += [run(0.08, b, s, 0.5 * 8 / b) for b in (16, 32) for s in (0, 1, 2)]
        >>> res = temperature_invariance(runs, metrics=["train"])
        >>> [(ln.label, ln.differs) for ln in res.lines if ln.kind != "fixed-B"]
        [('T=0.01', False), ('lr=0.08', True)]
    """
    runs = list(runs)
    cells = _cells(runs)
    if metrics is None:
        present: list[str] = []
        for r in runs:
            present.extend(m for m in r.loss if m not in present)
        metrics = [m for m in ("train", "test") if m in present] or present
    lines = [
        _score_line(kind, value, members, metric)
        for kind, value, members in _lines(cells)
        for metric in metrics
    ]
    return InvarianceResult(lines=tuple(lines), metrics=tuple(metrics))


def summarize_lines(lines: Sequence[LineScore]) -> Mapping[str, int]:
    """Counts of scored, differing and collapsing lines."""
    scored = [ln for ln in lines if ln.differs is not None]
    return {
        "lines": len(lines),
        "scored": len(scored),
        "differ": sum(bool(ln.differs) for ln in scored),
        "collapse": sum(not ln.differs for ln in scored),
    }
