r"""When has a training run become stationary: a stated test on its train objective.

The run samples its train objective $F = L + \frac\lambda2\|\theta\|^2$ on a fixed probe subset at
equal intervals $\Delta t$ of SDE time $t = \text{steps}\cdot\eta$ and feeds the samples
$F_1, F_2, \dots$ to a :class:`StationarityDetector`. At every check the detector takes the
*trailing window*, the last fraction ``window`` (default ½) of the samples, cuts it into
``batches`` (default 16) equal consecutive batches and fits a straight line to the batch means
(least squares). Batch means make the standard error honest under the strong autocorrelation of SGD
samples once a batch is longer than the correlation time (Schmeiser 1982 recommends 10–30
batches); the $t$ quantile with ``batches - 2`` degrees of freedom accounts for the small count.
With the window's slope $\hat r$ (per unit SDE time), its standard error $s_r$,
$q = t_{1-\alpha/2,\,\text{batches}-2}$ and the *mean rate* since the start
$\bar r = (\bar F_\text{window} - \bar F_\text{start}) / (t_\text{window} - t_\text{start})$
(window mean minus the mean of the first stored block, over the time between their centres),
the run is declared stationary at the first check where both hold:

1. **no trend**: $|\hat r| \le q\,s_r$ (the slope is not significant at level ``alpha``), and
2. **the descent is over**: $|\hat r| + q\,s_r \le \kappa\,|\bar r|$: even at its upper
   confidence bound the remaining trend is below the fraction $\kappa$ (``kappa``, default 0.1)
   of the average rate of change since the start.

Test 1 alone would accept any trend too small for a short window to resolve; test 2 rejects a run
that is still descending steadily however slow the descent (its window slope equals its mean
rate), and a short, noisy window (its confidence bound is wide). Once declared, the detection is
final; the window then starts at ``window_start`` and the caller measures stationary expectations
from there on. The rule looks only at $F$, so it is blind to a drift along directions that do not
change $F$ within the noise.

Properties, measured on SGD on the quadratic landscape (an Ornstein–Uhlenbeck relaxation known in
closed form; ``tests/train/test_train_stationarity.py``, 1000 chains per case): call the run
*relaxed* at the time $t_\text{relax}$ when the expected excess
$\mathbb E F(t) - \mathbb E_\infty F$ has decayed to the stationary standard deviation
$\sigma_F$ of $F$. With the slowest mode 20× slower than the modes that carry the noise, 5 samples
per correlation time of those (100 per slow time constant) and an initial excess of
$300\,\sigma_F$, detection fell in $[t_\text{relax}, 2\,t_\text{relax}]$ for 95 % of chains
(median $1.33\,t_\text{relax}$), before $t_\text{relax}$ for 0.5 % (5 chains) and after
$2\,t_\text{relax}$ for 4 % (at most $2.44\,t_\text{relax}$); with $1000\,\sigma_F$:
97.5 % / 0.1 % / 2.4 %; with $100\,\sigma_F$: 88 % / 8.8 % / 3.1 %. A steady descent (the slow
mode 2000× slower, $F$ falling by less than its noise per window at first) was never declared
(0 of 2000 chains). Detection cannot come much before twice the time the transient needs to fall
below the window's noise, because the whole trailing half must look flat; a run whose initial
excess is small against its noise (or that starts stationary, $\bar r \approx 0$) is declared
late or never.

Memory is bounded: samples are summed into at most ``capacity`` blocks; when full, adjacent
blocks are merged (block size doubles), so a check costs $O(\text{capacity})$ and checks happen
whenever a block completes (the time resolution stays within ``2 / capacity`` of $t$). The detector
is deterministic and its state (:meth:`StationarityDetector.state_dict`) is a small dict of floats,
for resuming a run.

Reference:
    B. Schmeiser, "Batch size effects in the analysis of simulation output", Operations Research
    30(3), 1982.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sgdtemp.errors import UserError

__all__ = [
    "StationarityRule",
    "StationarityCheck",
    "StationarityResult",
    "StationarityDetector",
    "trend_check",
]

# Relative tolerance on the sampling interval (t is steps * lr: exact up to float rounding).
_SPACING_RTOL = 1e-6


@dataclass(frozen=True)
class StationarityRule:
    r"""The parameters of the stationarity test (module docstring).

    Attributes:
        window: trailing fraction of the samples tested, in (0, 1).
        batches: batches the window is cut into (even, 4–64).
        alpha: significance level of the no-trend test, in (0, 1).
        kappa: largest remaining trend, as a fraction of the mean rate since the start, in (0, 1).
        capacity: blocks kept (memory bound), a multiple of ``batches`` with
            ``window * capacity / 2 >= 2 * batches``.

    Raises:
        UserError: on a value out of range (at construction).

    Example:
        >>> round(StationarityRule().quantile, 4)  # t quantile, 14 degrees of freedom, alpha 0.05
        2.1448
    """

    window: float = 0.5
    batches: int = 16
    alpha: float = 0.05
    kappa: float = 0.1
    capacity: int = 128
    quantile: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("window", "alpha", "kappa"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0.0 < value < 1.0):
                raise UserError(f"stationarity {name} must lie in (0, 1), got {value!r}")
        b = self.batches
        if isinstance(b, bool) or not isinstance(b, int) or not (4 <= b <= 64) or b % 2:
            raise UserError(f"stationarity batches must be an even integer in [4, 64], got {b!r}")
        c = self.capacity
        if isinstance(c, bool) or not isinstance(c, int) or c < 4 * b or c % b:
            raise UserError(
                f"stationarity capacity must be a multiple of batches ({b}) and at least "
                f"{4 * b}, got {c!r}"
            )
        if self.window * (c // 2) < 2 * b:  # after a merge only capacity/2 blocks remain
            raise UserError(
                f"stationarity window {self.window} x capacity/2 ({c // 2}) must hold at least "
                f"2 x batches ({2 * b}) blocks; raise window or capacity"
            )
        from scipy.stats import t as student_t  # deferred: scipy.stats is slow to import

        q = float(student_t.ppf(1.0 - self.alpha / 2.0, b - 2))
        object.__setattr__(self, "quantile", q)


@dataclass(frozen=True)
class StationarityCheck:
    r"""The statistics of one check (rates are per unit SDE time).

    Attributes:
        passed: both tests hold.
        rate: least-squares slope $\hat r$ of the window's batch means.
        rate_se: its standard error $s_r$ (batch means, ``batches - 2`` degrees of freedom).
        mean_rate: $\bar r$, the average rate of change since the start.
        window_mean: mean of $F$ over the window.
        window_start: SDE time of the first sample in the window.
        window_samples: samples in the window.
    """

    passed: bool
    rate: float
    rate_se: float
    mean_rate: float
    window_mean: float
    window_start: float
    window_samples: int


@dataclass(frozen=True)
class StationarityResult:
    r"""Whether and when a run became stationary.

    Attributes:
        reached: whether the rule fired.
        sde_time: SDE time of the sample at which it fired (None if not reached).
        sample: index of that sample, counted from 0 (None if not reached).
        samples: samples seen so far.
        last_time: SDE time of the last sample (nan before any).
        check: the statistics at the detection, or of the last check when not reached (None
            before the first check).
    """

    reached: bool
    sde_time: float | None
    sample: int | None
    samples: int
    last_time: float
    check: StationarityCheck | None

    @property
    def window_start(self) -> float | None:
        """SDE time where the certified stationary window starts (None if not reached)."""
        return self.check.window_start if self.reached and self.check is not None else None

    def summary(self) -> dict[str, Any]:
        """Plain scalars for a record: reached, sde_time, sample, window_start and the test."""
        out: dict[str, Any] = {
            "reached": self.reached,
            "sde_time": self.sde_time,
            "sample": self.sample,
            "samples": self.samples,
            "window_start": self.window_start,
        }
        if self.check is not None:
            c = self.check
            out.update(rate=c.rate, rate_se=c.rate_se, mean_rate=c.mean_rate)
        return out


def trend_check(
    block_means: np.ndarray,
    block_size: int,
    start_mean: float,
    dt: float,
    t0: float,
    rule: StationarityRule,
) -> StationarityCheck | None:
    r"""The two tests on a run summarized as equal blocks (the detector's check, exposed for tests).

    Args:
        block_means: means of consecutive equal blocks of samples, oldest first, ``(n_blocks,)``.
        block_size: samples per block.
        start_mean: mean of the run's first block (the start level).
        dt: SDE time between samples.
        t0: SDE time of the first sample.
        rule: the test's parameters.

    Returns:
        The check, or None while the window holds fewer than ``2 * batches`` blocks.
    """
    n_blocks = int(block_means.shape[0])
    b = rule.batches
    w = int(rule.window * n_blocks) // b * b  # window blocks: a multiple of the batch count
    if w < 2 * b:
        return None
    per_batch = w // b
    y = block_means[n_blocks - w :].reshape(b, per_batch).mean(axis=1)
    c = np.arange(b, dtype=np.float64) - (b - 1) / 2.0
    cc = float(c @ c)
    slope = float(c @ y) / cc  # per batch
    resid = y - y.mean() - slope * c
    slope_se = math.sqrt(float(resid @ resid) / (b - 2) / cc)
    batch_time = per_batch * block_size * dt
    rate, rate_se = slope / batch_time, slope_se / batch_time
    window_mean = float(y.mean())
    # centres: window at sample (n_blocks - w/2) * size - 1/2, first block at size/2 - 1/2
    elapsed = (n_blocks - w / 2.0 - 0.5) * block_size * dt
    mean_rate = (window_mean - float(start_mean)) / elapsed
    q = rule.quantile
    no_trend = abs(rate) <= q * rate_se
    over = abs(rate) + q * rate_se <= rule.kappa * abs(mean_rate)
    return StationarityCheck(
        passed=bool(no_trend and over),
        rate=rate,
        rate_se=rate_se,
        mean_rate=mean_rate,
        window_mean=window_mean,
        window_start=t0 + (n_blocks - w) * block_size * dt,
        window_samples=w * block_size,
    )


class StationarityDetector:
    r"""Feed it $F$ at equal SDE-time intervals; it says when the run became stationary.

    Args:
        rule: the test's parameters (default :class:`StationarityRule`).

    Example:
        >>> import numpy as np
        >>> det = StationarityDetector()
        >>> rng = np.random.default_rng(0)
        >>> t = np.arange(1, 4001) * 0.05
        >>> F = 1.0 + 5.0 * np.exp(-t / 10.0) + 0.01 * rng.standard_normal(t.size)
        >>> fired = [det.update(ti, fi) for ti, fi in zip(t, F)]
        >>> res = det.result
        >>> res.reached, 60 < res.sde_time < 160
        (True, True)
    """

    def __init__(self, rule: StationarityRule | None = None) -> None:
        self.rule = rule if rule is not None else StationarityRule()
        self._sums: list[float] = []
        self._size = 1
        self._partial = 0.0
        self._count = 0
        self._n = 0
        self._t0 = math.nan
        self._dt = math.nan
        self._last = math.nan
        self._fired: tuple[float, int] | None = None
        self._check: StationarityCheck | None = None

    @property
    def reached(self) -> bool:
        """Whether the rule has fired."""
        return self._fired is not None

    def update(self, t: float, value: float) -> bool:
        r"""Add the sample $F(t)$; return whether the run is (now or already) stationary.

        Args:
            t: SDE time of the sample; samples must come at equal increasing intervals.
            value: the train objective there.

        Raises:
            UserError: on a non-finite value, a time that does not increase or an interval
                different from the first one.
        """
        t, value = float(t), float(value)
        if not math.isfinite(value):
            raise UserError(f"the objective at t={t} is not finite ({value}): the run diverged")
        if self._n == 0:
            self._t0 = t
        else:
            step = t - self._last
            if self._n == 1:
                if not step > 0:
                    raise UserError(f"sample times must increase, got {self._last} then {t}")
                self._dt = step
            elif abs(step - self._dt) > _SPACING_RTOL * self._dt:
                raise UserError(
                    f"samples must come at equal SDE-time intervals: expected {self._dt:g} "
                    f"after t={self._last:g}, got {step:g}"
                )
        self._last = t
        self._n += 1
        if self._fired is not None:
            return True
        self._partial += value
        self._count += 1
        if self._count < self._size:
            return False
        self._sums.append(self._partial)
        self._partial, self._count = 0.0, 0
        if len(self._sums) >= self.rule.capacity:
            s = self._sums
            self._sums = [s[i] + s[i + 1] for i in range(0, len(s) - 1, 2)]
            self._size *= 2
        if self._n < 2:
            return False
        means = np.asarray(self._sums, dtype=np.float64) / self._size
        check = trend_check(means, self._size, means[0], self._dt, self._t0, self.rule)
        if check is None:
            return False
        self._check = check
        if check.passed:
            self._fired = (t, self._n - 1)
        return check.passed

    @property
    def result(self) -> StationarityResult:
        """Whether and when the rule fired, with the statistics of the deciding check."""
        fired = self._fired
        return StationarityResult(
            reached=fired is not None,
            sde_time=fired[0] if fired else None,
            sample=fired[1] if fired else None,
            samples=self._n,
            last_time=self._last,
            check=self._check,
        )

    def state_dict(self) -> dict[str, Any]:
        """The detector's state as plain Python values (for resuming a run)."""
        return {
            "sums": list(self._sums),
            "size": self._size,
            "partial": self._partial,
            "count": self._count,
            "n": self._n,
            "t0": self._t0,
            "dt": self._dt,
            "last": self._last,
            "fired": list(self._fired) if self._fired else None,
            "check": None if self._check is None else vars(self._check).copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` (the rule is the caller's)."""
        self._sums = [float(s) for s in state["sums"]]
        self._size = int(state["size"])
        self._partial = float(state["partial"])
        self._count = int(state["count"])
        self._n = int(state["n"])
        self._t0, self._dt, self._last = (float(state[k]) for k in ("t0", "dt", "last"))
        fired = state["fired"]
        self._fired = None if fired is None else (float(fired[0]), int(fired[1]))
        check = state["check"]
        self._check = None if check is None else StationarityCheck(**check)
