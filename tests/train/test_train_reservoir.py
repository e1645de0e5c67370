"""The running mean against float64 NumPy; the reservoir's uniformity by a chi-squared test."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from sgdtemp.errors import UserError
from sgdtemp.train.reservoir import Reservoir, RunningMean

P_MIN = 1e-3  # chi-squared tests: reject uniformity below this p-value (fixed seeds: deterministic)


def test_running_mean_of_float32_iterates_is_accurate_in_float64():
    gen = torch.Generator().manual_seed(0)
    base = torch.full((50,), 1000.0)
    xs = base + 1e-3 * torch.randn(20_000, 50, generator=gen)  # float32, offset 1e3, spread 1e-3
    m = RunningMean()
    for x in xs:
        m.update(x)
    exact = xs.double().numpy().mean(axis=0)  # NumPy pairwise sum in float64
    assert m.count == 20_000 and m.mean.dtype == torch.float64
    assert np.abs(m.mean.numpy() - exact).max() < 1e-9
    naive = xs.sum(dim=0) / xs.shape[0]  # float32 sum: loses digits
    assert (naive.double() - torch.as_tensor(exact)).abs().max() > 1e-6


def test_running_mean_of_scalars_and_resume():
    values = np.random.default_rng(1).standard_normal(101)
    whole, first, second = RunningMean(), RunningMean(), RunningMean()
    for v in values:
        whole.update(float(v))
    for v in values[:40]:
        first.update(float(v))
    second.load_state_dict(first.state_dict())
    for v in values[40:]:
        second.update(float(v))
    assert whole.value == pytest.approx(values.mean(), abs=1e-15)
    assert second.value == whole.value and second.count == 101


def test_running_mean_errors():
    m = RunningMean()
    with pytest.raises(UserError, match="no observation"):
        _ = m.mean
    m.update(torch.zeros(3))
    with pytest.raises(UserError, match="shape"):
        m.update(torch.zeros(4))


def _inclusions(n: int, k: int, runs: int) -> np.ndarray:
    counts = np.zeros(n, dtype=np.int64)
    for seed in range(runs):
        res = Reservoir(k, seed=seed)
        for i in range(n):
            res.offer(torch.tensor([float(i)]))
        sample = res.sample()
        assert sample.seen == n and sample.iterates.shape == (k, 1)
        assert torch.equal(sample.iterates[:, 0].long(), sample.indices)  # slots hold item i
        assert bool((sample.indices.diff() > 0).all())  # distinct, in arrival order
        counts[sample.indices.numpy()] += 1
    return counts


def test_reservoir_keeps_every_item_with_equal_probability():
    n, k, runs = 45, 9, 500
    counts = _inclusions(n, k, runs)
    expected = runs * k / n  # 100 per item
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # inclusion indicators in one run are not independent (exactly k per run): the statistic's
    # variance is smaller than chi2(n-1)'s, so the chi-squared p-value is conservative
    p = scipy.stats.chi2.sf(chi2, n - 1)
    assert p > P_MIN, (chi2, p)
    # early, middle and late thirds of the stream are equally represented
    thirds = counts.reshape(3, -1).sum(axis=1)
    p3 = scipy.stats.chisquare(thirds).pvalue
    assert p3 > P_MIN


def test_reservoir_pairs_are_uniform():
    # Algorithm R samples every k-subset with equal probability: pairs of a small stream
    n, k, runs = 6, 2, 1500
    pairs: dict[tuple[int, int], int] = {}
    for seed in range(runs):
        res = Reservoir(k, seed=10_000 + seed)
        for i in range(n):
            res.offer(torch.tensor([float(i)]))
        key = tuple(int(i) for i in res.sample().indices)
        pairs[key] = pairs.get(key, 0) + 1
    assert len(pairs) == 15  # all C(6, 2) subsets occur
    p = scipy.stats.chisquare(np.array(list(pairs.values()))).pvalue
    assert p > P_MIN


def test_reservoir_sample_mean_estimates_the_stream_mean():
    # an autocorrelated stream (AR(1)): the reservoir mean is an unbiased estimate of the
    # stream's mean; over 200 seeds the average error is within 4 standard errors of 0
    rng = np.random.default_rng(5)
    n, k = 400, 16
    stream = np.empty((n, 3))
    x = np.zeros(3)
    for i in range(n):
        x = 0.95 * x + rng.standard_normal(3)
        stream[i] = x
    streams = torch.as_tensor(stream)
    errors = []
    for seed in range(200):
        res = Reservoir(k, seed=seed)
        for theta in streams:
            res.offer(theta)
        errors.append((res.sample().iterates.mean(dim=0) - streams.mean(dim=0)).numpy())
    errors = np.asarray(errors)
    se = errors.std(axis=0, ddof=1) / np.sqrt(len(errors))
    assert (np.abs(errors.mean(axis=0)) < 4 * se).all()


def test_reservoir_is_deterministic_resumable_and_bounded():
    thetas = torch.randn(500, 7, generator=torch.Generator().manual_seed(3))
    a, b = Reservoir(16, seed=42), Reservoir(16, seed=42)
    kept = [a.offer(t) for t in thetas]
    for t in thetas[:123]:
        b.offer(t)
    c = Reservoir(16, seed=0)
    c.load_state_dict(b.state_dict())
    for t in thetas[123:]:
        c.offer(t)
    sa, sc = a.sample(), c.sample()
    assert torch.equal(sa.iterates, sc.iterates) and torch.equal(sa.indices, sc.indices)
    assert torch.equal(sa.iterates, thetas[sa.indices])
    assert sum(kept) < 500 and all(kept[:16])
    # fewer iterates than slots: all of them
    d = Reservoir(16, generator=np.random.default_rng(0))
    for t in thetas[:5]:
        d.offer(t)
    assert torch.equal(d.sample().iterates, thetas[:5])


def test_reservoir_errors():
    with pytest.raises(UserError, match="size"):
        Reservoir(0, seed=0)
    with pytest.raises(UserError, match="exactly one"):
        Reservoir(3)
    res = Reservoir(3, seed=0)
    with pytest.raises(UserError, match="no iterate"):
        res.sample()
    with pytest.raises(UserError, match="flat"):
        res.offer(torch.zeros(2, 2))
    res.offer(torch.zeros(2))
    with pytest.raises(UserError, match="keep size"):
        res.offer(torch.zeros(3))
    with pytest.raises(UserError, match="size"):
        Reservoir(4, seed=0).load_state_dict(res.state_dict())
