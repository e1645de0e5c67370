import numpy as np
import pytest
from scipy import stats

from sgdtemp.analysis import blocked_slope, mean_ci, seed_anova

# Null rejection rate of the blocked F test at ALPHA must be within this of ALPHA.
ALPHA = 0.05
RATE_ATOL = 0.03


def slow_seed_anova(y):
    """One-way ANOVA with seeds as replicates, written out with loops (one epoch)."""
    k, n = len(y), len(y[0])
    grand = sum(y[c][s] for c in range(k) for s in range(n)) / (k * n)
    cell = [sum(y[c]) / n for c in range(k)]
    ss_cell = n * sum((cell[c] - grand) ** 2 for c in range(k))
    ss_seed = sum((y[c][s] - cell[c]) ** 2 for c in range(k) for s in range(n))
    return (ss_cell / (k - 1)) / (ss_seed / (k * (n - 1)))


def test_seed_anova_matches_the_written_out_sums():
    rng = np.random.default_rng(1)
    y = rng.normal(size=(5, 3)) + np.arange(5)[:, None]
    res = seed_anova(y)
    assert res.f == pytest.approx(slow_seed_anova(y.tolist()), rel=1e-12)
    assert (res.df_cell, res.df_seed) == (4, 10)
    assert res.p_value == pytest.approx(stats.f.sf(res.f, 4, 10))
    assert res.f == pytest.approx(stats.f_oneway(*y).statistic)  # scipy's one-way ANOVA


def test_curves_pool_the_sums_of_squares_over_epochs():
    rng = np.random.default_rng(2)
    y = rng.normal(size=(3, 4, 6))
    res = seed_anova(y)
    per_epoch = [seed_anova(y[:, :, e]) for e in range(6)]
    assert res.ms_cell == pytest.approx(np.mean([r.ms_cell for r in per_epoch]))
    assert res.ms_seed == pytest.approx(np.mean([r.ms_seed for r in per_epoch]))


def test_a_shared_seed_effect_makes_the_test_conservative():
    rng = np.random.default_rng(3)
    noise = rng.normal(scale=0.01, size=(4, 3))
    shared = rng.normal(scale=1.0, size=(1, 3))  # what one initialization does to every cell
    assert seed_anova(noise + shared).f < seed_anova(noise).f


def test_null_rejection_rate_is_nominal():
    rng = np.random.default_rng(3)
    p = np.array([seed_anova(rng.normal(size=(4, 3))).p_value for _ in range(600)])
    assert abs((p < ALPHA).mean() - ALPHA) < RATE_ATOL


def test_ratio_ci_covers_one_under_the_null():
    rng = np.random.default_rng(4)
    covered = 0
    for _ in range(600):
        lo, hi = seed_anova(rng.normal(size=(4, 3))).ratio_ci
        covered += lo <= 1.0 <= hi
    assert abs(covered / 600 - 0.95) < RATE_ATOL


def test_seed_anova_rejects_bad_shapes():
    with pytest.raises(ValueError):
        seed_anova(np.zeros((1, 3)))
    with pytest.raises(ValueError):
        seed_anova(np.array([[0.0, np.nan], [1.0, 2.0]]))


def test_blocked_slope_matches_least_squares_with_dummies():
    rng = np.random.default_rng(5)
    x = np.tile(np.arange(4.0), 3)
    blocks = np.repeat([0, 1, 2], 4)
    y = -0.7 * x + np.array([1.0, 5.0, -2.0])[blocks] + rng.normal(scale=0.1, size=12)
    design = np.column_stack([x, blocks == 0, blocks == 1, blocks == 2]).astype(float)
    coef, res, *_ = np.linalg.lstsq(design, y, rcond=None)
    df = 12 - 4
    se = np.sqrt(res[0] / df * np.linalg.inv(design.T @ design)[0, 0])
    s = blocked_slope(x, y, blocks)
    assert s.slope == pytest.approx(coef[0])
    assert s.stderr == pytest.approx(se)
    assert s.df == df
    half = stats.t.ppf(0.975, df) * se
    assert s.ci == pytest.approx((coef[0] - half, coef[0] + half))
    assert s.negative and not s.positive


def test_blocked_slope_without_spread_is_nan():
    s = blocked_slope([1.0, 1.0], [2.0, 3.0], [0, 1])
    assert np.isnan(s.slope)


def test_mean_ci_matches_scipy():
    v = [0.41, 0.43, 0.40, 0.45]
    m, lo, hi = mean_ci(v)
    ref = stats.t.interval(0.95, 3, loc=np.mean(v), scale=stats.sem(v))
    assert (lo, hi) == pytest.approx(ref)
    assert m == pytest.approx(np.mean(v))
    assert np.isnan(mean_ci([1.0])[1])
