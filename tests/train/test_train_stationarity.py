"""The stationarity rule against SGD on the quadratic landscape (Ornstein–Uhlenbeck in closed form).

SGD with replacement on ``QuadraticLoss`` is a linear recursion with noise independent of the
state, so the expected excess of the train objective is exact:
$E(k) = \\tfrac12 m_k^\\top H m_k - \\tfrac12\\mathrm{tr}(H A^k\\Sigma_\\infty A^k)$ with
$A = I - \\eta H$, $m_k = A^k m_0$ and $\\Sigma_\\infty$ the discrete Lyapunov solution. The run is
*relaxed* at the first step where $E$ falls to the stationary standard deviation of $F$,
$\\sigma_F = \\sqrt{\\tfrac12\\mathrm{tr}(H\\Sigma_\\infty H\\Sigma_\\infty)}$ (Gaussian).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sgdtemp.errors import UserError
from sgdtemp.landscapes import QuadraticLoss
from sgdtemp.simulate import run_sgd
from sgdtemp.theory.lyapunov import lyapunov_discrete
from sgdtemp.train.stationarity import (
    StationarityDetector,
    StationarityRule,
    trend_check,
)

F64 = torch.float64
LR, BATCH, EVERY = 0.02, 8, 5  # F every 5 steps: dt = 0.1, 5 samples per fast correlation time
H_FAST, N_FAST = 1.0, 7
CHAINS = 100


def _landscape(h_slow: float):
    h = torch.tensor([h_slow] + [H_FAST] * N_FAST, dtype=F64)
    xi = torch.randn(512, h.numel(), generator=torch.Generator().manual_seed(0), dtype=F64)
    return QuadraticLoss(torch.diag(h), xi)


def _oracle(loss: QuadraticLoss, ratio: float):
    """Displacement along the slow axis with E(0) = ratio * sigma_F; E(k) and sigma_F."""
    H = loss.H.numpy()
    C = loss.noise_cov(torch.zeros(loss.dim, dtype=F64)).numpy()
    sigma = lyapunov_discrete(H, C, LR / BATCH, LR)
    sigma_f = math.sqrt(0.5 * np.trace(H @ sigma @ H @ sigma))
    h_slow = H[0, 0]
    m0 = math.sqrt(2 * (ratio * sigma_f + 0.5 * np.trace(H @ sigma)) / h_slow)
    A = np.eye(loss.dim) - LR * H

    def excess(k: int) -> float:
        ak = np.linalg.matrix_power(A, k)
        m = ak[:, 0] * m0
        return 0.5 * m @ H @ m - 0.5 * np.trace(H @ ak @ sigma @ ak)

    return m0, excess, sigma_f


def _detect(h_slow: float, ratio: float, horizon: float, seed: int, rule=None):
    """Run CHAINS chains of SGD; return each chain's detection time (inf if none) and t_relax."""
    loss = _landscape(h_slow)
    m0, excess, sigma_f = _oracle(loss, ratio)
    k = 0
    while excess(k) > sigma_f:
        k += EVERY
    t_relax = k * LR
    n_steps = int(horizon / LR) // EVERY * EVERY
    xstar = loss.minimizers()[0]
    theta0 = xstar.repeat(CHAINS, 1)
    theta0[:, 0] += m0
    traj = run_sgd(
        loss,
        theta0,
        lr=LR,
        batch_size=BATCH,
        n_steps=n_steps,
        record_every=EVERY,
        replacement=True,
        generator=torch.Generator().manual_seed(seed),
    )
    values = (loss.loss(traj.thetas) - loss.loss(xstar)).numpy()  # F - F*, (records, chains)
    times = traj.times.numpy()
    found = np.full(CHAINS, np.inf)
    for c in range(CHAINS):
        det = StationarityDetector(rule)
        for t, f in zip(times[1:], values[1:, c]):
            if det.update(t, f):
                res = det.result
                assert res.reached and res.sde_time == t and res.window_start is not None
                assert res.window_start == pytest.approx(t - res.check.window_samples * 0.1 + 0.1)
                found[c] = t
                break
    return found, t_relax


def test_ou_relaxation_is_detected_within_a_factor_two_and_not_before():
    # initial excess 300 sigma_F along a mode 20x slower than the noise-carrying modes
    found, t_relax = _detect(h_slow=0.05, ratio=300.0, horizon=3 * 57.1, seed=1)
    assert t_relax == pytest.approx(57.1, abs=0.1)  # = ln(300)/(2 h_slow) up to the discreteness
    ratio = found / t_relax
    assert np.isfinite(ratio).all()  # every chain declared within 3 t_relax
    assert np.mean(ratio < 1.0) <= 0.02  # false-early rate (measured 0 of 1000 chains)
    assert np.mean((ratio >= 1.0) & (ratio <= 2.0)) >= 0.85  # measured 0.9-0.96
    assert ratio.max() <= 2.5


@pytest.mark.parametrize("ratio", [30.0, 300.0])
def test_steady_descent_is_never_declared(ratio):
    # the slow mode relaxes in ~1/(2 h) = 1000 time units: over t = 150 F still descends steadily,
    # by far less than its noise per sample interval and (ratio 30) per window for most checks
    found, _ = _detect(h_slow=5e-4, ratio=ratio, horizon=150.0, seed=2)
    assert not np.isfinite(found).any()


def _batch_means_slow(samples: np.ndarray, rule: StationarityRule) -> np.ndarray:
    """Window batch means from the raw samples (no blocks), for a window that fits exactly."""
    n = samples.size
    w = int(rule.window * n) // rule.batches * rule.batches
    return samples[n - w :].reshape(rule.batches, -1).mean(axis=1)


def test_trend_check_against_a_straight_line_fit():
    rule = StationarityRule(batches=8, capacity=64)
    rng = np.random.default_rng(0)
    samples = 2.0 - 0.01 * np.arange(64) + 0.05 * rng.standard_normal(64)
    dt, t0 = 0.25, 1.0
    check = trend_check(samples, 1, samples[0], dt, t0, rule)
    y = _batch_means_slow(samples, rule)
    centres = t0 + dt * (32 + 4 * np.arange(8) + 1.5)  # batch centres in SDE time
    fit, cov = np.polyfit(centres, y, 1, cov="unscaled")
    resid = y - np.polyval(fit, centres)
    se = math.sqrt(float(resid @ resid) / 6 * cov[0, 0])
    assert check is not None
    assert check.rate == pytest.approx(fit[0], rel=1e-12)
    assert check.rate_se == pytest.approx(se, rel=1e-10)
    assert check.window_mean == pytest.approx(samples[32:].mean(), rel=1e-12)
    assert check.window_start == pytest.approx(t0 + 32 * dt)
    assert check.window_samples == 32
    mean_rate = (samples[32:].mean() - samples[0]) / (dt * (64 - 16 - 0.5))
    assert check.mean_rate == pytest.approx(mean_rate, rel=1e-12)


def test_noiseless_ramp_and_constant():
    rule = StationarityRule(batches=4, capacity=32, window=0.5)
    ramp = trend_check(np.linspace(1.0, 0.0, 16), 1, 1.0, 1.0, 0.0, rule)
    assert ramp is not None and not ramp.passed  # exact trend, zero standard error
    short = trend_check(np.linspace(1.0, 0.0, 15), 1, 1.0, 1.0, 0.0, rule)
    assert short is None  # the window holds fewer than 2 x batches blocks
    flat = trend_check(np.ones(16), 1, 1.0, 1.0, 0.0, rule)
    assert flat is not None and flat.passed and flat.rate == 0.0


def test_blocks_stay_bounded_and_match_the_raw_samples():
    rule = StationarityRule(batches=4, capacity=32)
    det = StationarityDetector(rule)
    rng = np.random.default_rng(1)
    samples = 1.0 + np.arange(1000) * 1e-3 + rng.standard_normal(1000)  # a trend: never fires
    for k, f in enumerate(samples):
        det.update(0.5 * (k + 1), f)
        assert len(det.state_dict()["sums"]) < rule.capacity
    state = det.state_dict()
    size = state["size"]
    stored = np.asarray(state["sums"]) / size
    n_full = len(stored) * size
    assert np.allclose(stored, samples[:n_full].reshape(-1, size).mean(axis=1), rtol=1e-12)
    assert det.result.samples == 1000 and det.result.last_time == 500.0
    assert not det.result.reached and det.result.check is not None


def test_resuming_from_the_state_gives_the_same_detection():
    rng = np.random.default_rng(3)
    t = np.arange(1, 3001) * 0.05
    values = 1.0 + 5.0 * np.exp(-t / 8.0) + 0.02 * rng.standard_normal(t.size)
    whole = StationarityDetector()
    for ti, fi in zip(t, values):
        whole.update(ti, fi)
    first = StationarityDetector()
    for ti, fi in zip(t[:700], values[:700]):
        first.update(ti, fi)
    second = StationarityDetector()
    second.load_state_dict(first.state_dict())
    for ti, fi in zip(t[700:], values[700:]):
        second.update(ti, fi)
    assert whole.result.reached
    assert second.result == whole.result


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"window": 1.0}, "window"),
        ({"alpha": 0.0}, "alpha"),
        ({"kappa": 1.5}, "kappa"),
        ({"batches": 5}, "batches"),
        ({"batches": 2}, "batches"),
        ({"capacity": 100}, "capacity"),
        ({"window": 0.2, "capacity": 128}, "window"),
    ],
)
def test_bad_rule_parameters(kwargs, match):
    with pytest.raises(UserError, match=match):
        StationarityRule(**kwargs)


def test_bad_samples():
    det = StationarityDetector()
    with pytest.raises(UserError, match="not finite"):
        det.update(0.0, float("nan"))
    det.update(0.0, 1.0)
    with pytest.raises(UserError, match="increase"):
        det.update(0.0, 1.0)
    det.update(0.1, 1.0)
    with pytest.raises(UserError, match="equal SDE-time intervals"):
        det.update(0.3, 1.0)
