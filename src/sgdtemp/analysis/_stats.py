r"""Small statistics for sweeps: ANOVA against seed noise, confidence intervals, blocked slopes.

Runs of one sweep that share a seed share their initial weights and their data order. Whether
cells (η, B) *coincide within seed spread* is judged against the full seed-to-seed spread
(:func:`seed_anova`, one-way ANOVA with seeds as replicates): the shared seed makes cells more
alike than independent replicates, which only makes that test conservative. Trends are fitted
with one intercept per seed (:func:`blocked_slope`, seeds as blocks), which removes what a seed
does to every cell and keeps the test of the slope exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

__all__ = ["SeedAnova", "seed_anova", "mean_ci", "Slope", "blocked_slope", "CONFIDENCE"]

FloatArray = NDArray[np.float64]

#: Confidence level of every interval in the analysis.
CONFIDENCE = 0.95


@dataclass(frozen=True)
class SeedAnova:
    r"""Cells compared with the seed-to-seed spread: $F = \mathrm{MS_{cell}} / \mathrm{MS_{seed}}$.

    Attributes:
        f: the F ratio: $n$ times the variance of the cells' seed means over the pooled
            variance across seeds within cells (pooled over epochs for curves).
        df_cell: $k - 1$ for $k$ cells.
        df_seed: $k(n - 1)$ for $n$ seeds per cell.
        ms_cell: mean square between cells (per epoch, averaged over epochs).
        ms_seed: mean square across seeds within cells (per epoch, averaged over epochs).
        p_value: $P(F_{k-1,k(n-1)} \ge f)$ under "cells differ only by seed noise".
        ratio_ci: confidence interval of the ratio of expected mean squares
            $1 + n\sigma^2_{\rm cell}/\sigma^2_{\rm seed}$ (1 when cells do not differ):
            $[f/F_{1-\alpha/2},\ f/F_{\alpha/2}]$.
    """

    f: float
    df_cell: int
    df_seed: int
    ms_cell: float
    ms_seed: float
    p_value: float
    ratio_ci: tuple[float, float]


def seed_anova(y: ArrayLike, *, confidence: float = CONFIDENCE) -> SeedAnova:
    r"""One-way ANOVA of cells with seeds as replicates, optionally over epochs.

    Per epoch $e$, with cell means $\bar y_{c}$ over the $n$ seeds and grand mean $\bar y$:
    $\mathrm{SS_{cell}} = n\sum_c(\bar y_c-\bar y)^2$ and
    $\mathrm{SS_{seed}} = \sum_{cs}(y_{cs}-\bar y_c)^2$. Curves pool the sums of squares over
    epochs; the F reference distribution keeps the degrees of freedom of one epoch (epochs are
    correlated, so this is the conservative choice), and so does a shared seed across cells.

    Args:
        y: values ``(k, n)`` (cells × seeds) or curves ``(k, n, E)``; at least 2 cells and 2
            seeds, all finite.
        confidence: level of ``ratio_ci``.

    Returns:
        The :class:`SeedAnova`.

    Raises:
        ValueError: on fewer than 2 cells or seeds or non-finite values.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> same = seed_anova(rng.normal(size=(4, 3, 10)))
        >>> offsets = 3.0 * np.arange(4)[:, None, None]  # cells differ by 3 noise units
        >>> shifted = seed_anova(rng.normal(size=(4, 3, 10)) + offsets)
        >>> same.p_value > 0.05, shifted.p_value < 1e-3
        (True, True)
    """
    a = np.asarray(y, dtype=np.float64)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[0] < 2 or a.shape[1] < 2 or a.shape[2] < 1:
        raise ValueError(f"need (cells >= 2, seeds >= 2[, epochs]) values, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError("values must be finite")
    k, n, _ = a.shape
    cell = a.mean(axis=1, keepdims=True)
    grand = a.mean(axis=(0, 1), keepdims=True)
    df1, df2 = k - 1, k * (n - 1)
    ms_cell = float((n * ((cell - grand) ** 2).sum(axis=(0, 1))).mean() / df1)
    ms_seed = float((((a - cell) ** 2).sum(axis=(0, 1))).mean() / df2)
    if ms_seed > 0:
        f = ms_cell / ms_seed
    else:
        f = 0.0 if ms_cell == 0 else math.inf
    alpha = 1.0 - confidence
    lo_q, hi_q = stats.f.ppf([1 - alpha / 2, alpha / 2], df1, df2)
    ci = (f / lo_q, f / hi_q) if math.isfinite(f) else (math.inf, math.inf)
    return SeedAnova(
        f=f,
        df_cell=df1,
        df_seed=df2,
        ms_cell=ms_cell,
        ms_seed=ms_seed,
        p_value=float(stats.f.sf(f, df1, df2)) if math.isfinite(f) else 0.0,
        ratio_ci=(float(ci[0]), float(ci[1])),
    )


def mean_ci(values: ArrayLike, *, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval (NaN bounds with fewer than 2 finite values).

    Example:
        >>> m, lo, hi = mean_ci([1.0, 2.0, 3.0])
        >>> m, round(lo, 3), round(hi, 3)
        (2.0, -0.484, 4.484)
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return math.nan, math.nan, math.nan
    m = float(v.mean())
    if v.size < 2:
        return m, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return m, m - half, m + half


@dataclass(frozen=True)
class Slope:
    """Least-squares slope with a confidence interval.

    Attributes:
        slope: the slope.
        ci: its confidence interval (NaN bounds without residual degrees of freedom).
        stderr: its standard error.
        df: residual degrees of freedom.
        n: points used.
    """

    slope: float
    ci: tuple[float, float]
    stderr: float
    df: int
    n: int

    @property
    def negative(self) -> bool:
        """The whole interval lies below 0."""
        return bool(np.isfinite(self.ci[1]) and self.ci[1] < 0)

    @property
    def positive(self) -> bool:
        """The whole interval lies above 0."""
        return bool(np.isfinite(self.ci[0]) and self.ci[0] > 0)


def blocked_slope(
    x: ArrayLike, y: ArrayLike, blocks: ArrayLike, *, confidence: float = CONFIDENCE
) -> Slope:
    """Slope of ``y`` on ``x`` with one intercept per block (seed fixed effects).

    Args:
        x: predictor ``(m,)``.
        y: response ``(m,)``; non-finite points are dropped.
        blocks: block label of each point ``(m,)``.
        confidence: level of the interval.

    Returns:
        The :class:`Slope` (NaN when ``x`` does not vary within blocks).

    Example:
        >>> x = np.array([0, 1, 2, 0, 1, 2.0])
        >>> s = blocked_slope(x, 2 * x + np.array([0, 0, 0, 5, 5, 5.0]) + [0, .1, 0, 0, -.1, 0],
        ...                   [0, 0, 0, 1, 1, 1])
        >>> round(s.slope, 6), s.df, s.negative
        (2.0, 3, False)
    """
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    ba = np.asarray(blocks)
    keep = np.isfinite(xa) & np.isfinite(ya)
    xa, ya, ba = xa[keep], ya[keep], ba[keep]
    labels = sorted(set(ba.tolist()))
    xc, yc = xa.copy(), ya.copy()
    for b in labels:
        sel = ba == b
        xc[sel] -= xa[sel].mean()
        yc[sel] -= ya[sel].mean()
    sxx = float((xc**2).sum())
    n = int(xa.size)
    df = n - len(labels) - 1
    if sxx <= 0 or n == 0:
        return Slope(math.nan, (math.nan, math.nan), math.nan, max(df, 0), n)
    slope = float((xc * yc).sum() / sxx)
    if df < 1:
        return Slope(slope, (math.nan, math.nan), math.nan, 0, n)
    resid = yc - slope * xc
    stderr = math.sqrt(float((resid**2).sum()) / df / sxx)
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * stderr
    return Slope(slope, (slope - half, slope + half), stderr, df, n)
