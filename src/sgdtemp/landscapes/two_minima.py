r"""The synthetic two-minima laboratory (theory.md §4, §5): a Gaussian-mixture potential, its data.

The potential is the negative log density of a two-component Gaussian mixture,

$$U(u) = -\log\big[\pi_1\,\mathcal N(u; m_1, w_1^2) + \pi_2\,\mathcal N(u; m_2, w_2^2)\big],$$

with a local minimum near each $m_k$, curvature about $1/w_k^2$ and depth about
$-\log(\pi_k / (\sqrt{2\pi}\,w_k))$. Each training example $(x_n, \xi_n)$ translates and tilts it,

$$\ell(\theta; x, \xi) = U(\theta - x) + \xi\,\theta,\qquad
L(\theta) = \frac1N\sum_n \ell(\theta; x_n, \xi_n).$$

The translation gives gradient noise $C \approx U''^2\,\mathrm{Var}(x)$ (largest in the sharp
basin), the tilt gives isotropic noise $C \approx \mathrm{Var}(\xi)$; theory.md §5 explains why the
classic low-$T$-sharp / high-$T$-wide crossover needs the tilt to dominate.

Numerics. Write $a_k(u) = \log\pi_k - \log w_k - \tfrac12\log 2\pi - (u-m_k)^2/(2w_k^2)$ and
$\delta = a_2 - a_1 = c_0 + c_1u + c_2u^2$ (quadratic in $u$). The responsibilities are
$r_2 = \sigma(\delta)$, $r_1 = \sigma(-\delta)$, and with $e_k = (u-m_k)/w_k^2$,
$D = \delta' = e_1-e_2$:

$$U' = r_1e_1 + r_2e_2,\quad U'' = r_1\kappa_1 + r_2\kappa_2 - r_1r_2D^2,\quad
U''' = -r_1r_2\big[3DD' + (r_1-r_2)D^3\big],$$

with $\kappa_k = 1/w_k^2$ and $D' = \kappa_1-\kappa_2$. Nothing overflows for large $|u|$.

Fast paths. Grid evaluations of $L'$, $L''$ and $C$ (matrix products over a sigmoid matrix,
:mod:`sgdtemp.landscapes._two_minima_grid`) and fused minibatch gradients (one sigmoid per
sampled example, :mod:`sgdtemp.landscapes._two_minima_minibatch`) live in their own modules;
this one holds the definitions and the straightforward evaluations they are tested against.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from sgdtemp.errors import UserError
from sgdtemp.landscapes._base import AbstractPerExampleLoss
from sgdtemp.landscapes._two_minima_grid import CenteredData, GridEvaluator
from sgdtemp.landscapes._two_minima_minibatch import MinibatchGradient

__all__ = ["MixturePotential", "TwoMinimaLoss", "sample_two_minima_data"]

# Elements of one (grid points x examples) block in the straightforward evaluations (loss, third
# derivative): large enough to amortize per-call overhead, small enough to stay in cache.
_CHUNK_ELEMENTS = 1 << 17
# Points of the scan that brackets the critical points of L, and bisection steps that refine them.
_SCAN_POINTS = 1025
_BISECTION_STEPS = 64
# pi must sum to 1 within this.
_PI_SUM_TOL = 1e-9


@dataclass(frozen=True)
class _Coefficients:
    r"""$\delta(u) = c_0 + c_1u + c_2u^2$, curvatures $\kappa_k$ and centres $m_k$ as floats."""

    c0: float
    c1: float
    c2: float
    k1: float
    k2: float
    m1: float
    m2: float
    log_norm1: float  # log pi_1 - log w_1 - log(2 pi)/2
    log_norm2: float


@dataclass(frozen=True)
class MixturePotential:
    r"""$U(u) = -\log\sum_k \pi_k\,\mathcal N(u; m_k, w_k^2)$ with two components.

    All methods are elementwise over a tensor of any shape; dtype and device follow the input.

    Attributes:
        m: component means, strictly increasing.
        w: component standard deviations (widths), positive.
        pi: component weights, positive, summing to 1.

    Example:
        >>> pot = MixturePotential()
        >>> pot.wide
        1
        >>> u = torch.tensor([-2.0, 2.0], dtype=torch.float64)  # near the two minima
        >>> [round(v, 3) for v in pot.d1(u).tolist()]
        [-0.025, 0.0]
    """

    m: tuple[float, float] = (-2.0, 2.0)
    w: tuple[float, float] = (0.5, 1.5)
    pi: tuple[float, float] = (0.4, 0.6)

    def __post_init__(self) -> None:
        for name in ("m", "w", "pi"):
            value = getattr(self, name)
            try:
                pair = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                raise UserError(f"{name} must be a pair of numbers, got {value!r}") from None
            if len(pair) != 2 or not all(math.isfinite(v) for v in pair):
                raise UserError(f"{name} must be a pair of finite numbers, got {value!r}")
            object.__setattr__(self, name, pair)
        if min(self.w) <= 0:
            raise UserError(f"widths w must be positive, got {self.w}")
        if min(self.pi) <= 0 or abs(sum(self.pi) - 1.0) > _PI_SUM_TOL:
            raise UserError(f"weights pi must be positive and sum to 1, got {self.pi}")
        if not self.m[0] < self.m[1]:
            raise UserError(f"means m must be strictly increasing, got {self.m}")

    @property
    def wide(self) -> int:
        """Index (0 or 1) of the wide component, the one with the larger ``w`` (1 on a tie)."""
        return 0 if self.w[0] > self.w[1] else 1

    @cached_property
    def _coef(self) -> _Coefficients:
        (m1, m2), (w1, w2), (p1, p2) = self.m, self.w, self.pi
        k1, k2 = 1.0 / w1**2, 1.0 / w2**2
        half_log_2pi = 0.5 * math.log(2.0 * math.pi)
        n1 = math.log(p1) - math.log(w1) - half_log_2pi
        n2 = math.log(p2) - math.log(w2) - half_log_2pi
        return _Coefficients(
            c0=n2 - n1 - 0.5 * k2 * m2**2 + 0.5 * k1 * m1**2,
            c1=k2 * m2 - k1 * m1,
            c2=0.5 * (k1 - k2),
            k1=k1,
            k2=k2,
            m1=m1,
            m2=m2,
            log_norm1=n1,
            log_norm2=n2,
        )

    def log_ratio(self, u: Tensor) -> Tensor:
        r"""$\delta(u) = \log[\pi_2\mathcal N_2(u) / (\pi_1\mathcal N_1(u))]$, quadratic in u."""
        c = self._coef
        return c.c0 + u * (c.c1 + c.c2 * u)

    def value(self, u: Tensor) -> Tensor:
        """$U(u)$, computed as a log-sum-exp (no overflow or underflow)."""
        c = self._coef
        a1 = c.log_norm1 - 0.5 * c.k1 * (u - c.m1) ** 2
        a2 = c.log_norm2 - 0.5 * c.k2 * (u - c.m2) ** 2
        return -torch.maximum(a1, a2) - torch.log1p(torch.exp(-(a1 - a2).abs()))

    def d1(self, u: Tensor) -> Tensor:
        r"""$U'(u) = \sum_k r_k (u - m_k)/w_k^2$."""
        c = self._coef
        delta = self.log_ratio(u)
        return torch.sigmoid(-delta) * (c.k1 * (u - c.m1)) + torch.sigmoid(delta) * (
            c.k2 * (u - c.m2)
        )

    def d2(self, u: Tensor) -> Tensor:
        r"""$U''(u) = r_1\kappa_1 + r_2\kappa_2 - r_1r_2D^2$ (mean curvature minus the spread)."""
        c = self._coef
        delta = self.log_ratio(u)
        r1, r2 = torch.sigmoid(-delta), torch.sigmoid(delta)
        d = c.c1 + 2.0 * c.c2 * u
        return r1 * c.k1 + r2 * c.k2 - r1 * r2 * d * d

    def d3(self, u: Tensor) -> Tensor:
        r"""$U'''(u) = -r_1r_2[3DD' + (r_1 - r_2)D^3]$."""
        c = self._coef
        delta = self.log_ratio(u)
        r1, r2 = torch.sigmoid(-delta), torch.sigmoid(delta)
        d = c.c1 + 2.0 * c.c2 * u
        return -r1 * r2 * (3.0 * (c.k1 - c.k2) * d + (r1 - r2) * d**3)


def sample_two_minima_data(
    n: int,
    *,
    translation_std: float,
    tilt_std: float,
    shift: float = 0.0,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    r"""Draw $n$ examples: translations $x$ and tilts $\xi$, independent Gaussians.

    $x\sim\mathcal N(\text{shift},\tau^2)$ and $\xi\sim\mathcal N(0,\sigma^2)$.

    Args:
        n: number of examples, at least 1.
        translation_std: $\tau \ge 0$, the spread of the translations.
        tilt_std: $\sigma \ge 0$, the spread of the tilts.
        shift: mean translation (a domain shift when it differs between train and test).
        generator: source of randomness; the tensors live on its device.

    Returns:
        ``(x, xi)``, each ``(n,)`` float64; ``x`` is drawn first, then ``xi``.

    Raises:
        UserError: on a non-positive ``n`` or a negative or non-finite spread.

    Example:
        >>> x, xi = sample_two_minima_data(
        ...     4, translation_std=0.02, tilt_std=8.0, generator=torch.Generator().manual_seed(0)
        ... )
        >>> x.shape, xi.dtype
        (torch.Size([4]), torch.float64)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserError(f"n must be a positive integer, got {n!r}")
    for name, value in (("translation_std", translation_std), ("tilt_std", tilt_std)):
        if not (math.isfinite(value) and value >= 0):
            raise UserError(f"{name} must be a finite number >= 0, got {value}")
    if not math.isfinite(shift):
        raise UserError(f"shift must be finite, got {shift}")
    dtype, device = torch.float64, generator.device
    x = shift + translation_std * torch.randn(n, generator=generator, dtype=dtype, device=device)
    xi = tilt_std * torch.randn(n, generator=generator, dtype=dtype, device=device)
    return x, xi


class TwoMinimaLoss(AbstractPerExampleLoss):
    r"""Train loss $L(\theta) = \frac1N\sum_n U(\theta - x_n) + \xi_n\theta$, $\theta\in\mathbb R$.

    Args:
        potential: the mixture potential $U$.
        x: translations, ``(N,)``.
        xi: tilts, ``(N,)``, same dtype and device as ``x``.

    Raises:
        UserError: on malformed data.

    Attributes:
        potential: the mixture potential.
        x: translations, ``(N,)``.
        xi: tilts, ``(N,)``.

    Example:
        >>> gen = torch.Generator().manual_seed(0)
        >>> x, xi = sample_two_minima_data(512, translation_std=0.02, tilt_std=8.0, generator=gen)
        >>> loss = TwoMinimaLoss(MixturePotential(), x, xi)
        >>> loss.minimizers().shape, loss.wide
        (torch.Size([2, 1]), 1)
    """

    name = "two-minima"
    dim = 1

    def __init__(self, potential: MixturePotential, x: Tensor, xi: Tensor) -> None:
        if not isinstance(potential, MixturePotential):
            raise UserError(f"potential must be a MixturePotential, got {type(potential).__name__}")
        for label, t in (("x", x), ("xi", xi)):
            if not isinstance(t, Tensor) or t.ndim != 1 or t.numel() < 1:
                raise UserError(f"{label} must be a non-empty 1-D tensor of examples")
            if not t.is_floating_point() or not bool(torch.isfinite(t).all()):
                raise UserError(f"{label} must hold finite floating-point values")
        if x.shape != xi.shape or x.dtype != xi.dtype or x.device != xi.device:
            raise UserError(
                f"x and xi must have the same length, dtype and device, got {tuple(x.shape)} "
                f"{x.dtype} {x.device} and {tuple(xi.shape)} {xi.dtype} {xi.device}"
            )
        self.potential = potential
        self.x = x
        self.xi = xi
        self.n_examples = int(x.numel())
        # The fast kernels share the centered data; the grid one is built on first use.
        self._data = CenteredData.build(potential, x, xi)
        self._grid_evaluator: GridEvaluator | None = None
        self._minibatch = MinibatchGradient(potential, self._data)
        self._critical: tuple[Tensor, Tensor] | None = None
        self._wide = potential.wide

    # ------------------------------------------------------------------ properties and helpers

    @property
    def wide(self) -> int:
        """Row (0 or 1) of :meth:`minimizers` that is the wide minimum.

        The wide minimum is the one owned by the component with the larger ``w`` (mean
        responsibility above 1/2 there). A strong tilt can carry it past the other one, so it
        need not be row ``potential.wide``.
        """
        self._critical_points()
        return self._wide

    def _flat(self, theta: Tensor) -> tuple[Tensor, torch.Size]:
        if theta.shape[-1:] != (1,):
            raise UserError(f"theta must have shape (..., 1), got {tuple(theta.shape)}")
        dtype = torch.promote_types(theta.dtype, self.x.dtype)
        return theta.reshape(-1).to(dtype), theta.shape[:-1]

    def _rows(self) -> int:
        return max(1, _CHUNK_ELEMENTS // self.n_examples)

    def _chunked_mean(self, fn: Callable[[Tensor], Tensor], theta: Tensor) -> Tensor:
        """``mean_n fn(theta - x_n)`` for flat ``theta`` (G,), in blocks of grid rows."""
        x = self.x.to(theta.dtype)
        rows = self._rows()
        out = [fn(chunk.unsqueeze(1) - x).mean(dim=1) for chunk in theta.split(rows)]
        return torch.cat(out) if out else theta.new_empty(0)

    @property
    def _grid(self) -> GridEvaluator:
        if self._grid_evaluator is None:
            self._grid_evaluator = GridEvaluator(self.potential, self._data)
        return self._grid_evaluator

    # ------------------------------------------------------------------ AbstractLandscape

    def loss(self, theta: Tensor) -> Tensor:
        """Train loss, ``(..., 1) -> (...)``."""
        flat, batch = self._flat(theta)
        out = self._chunked_mean(self.potential.value, flat) + self.xi.mean().to(flat) * flat
        return out.reshape(batch)

    def grad(self, theta: Tensor) -> Tensor:
        """Gradient, ``(..., 1) -> (..., 1)``."""
        flat, batch = self._flat(theta)
        return self._grid.grad(flat - self._data.xbar).reshape(*batch, 1)

    def hessian(self, theta: Tensor) -> Tensor:
        """Hessian, ``(..., 1) -> (..., 1, 1)``."""
        flat, batch = self._flat(theta)
        _, hess, _ = self._grid.grad_hess_cov(flat - self._data.xbar)
        return hess.reshape(*batch, 1, 1)

    def third_derivative(self, theta: Tensor) -> Tensor:
        """Third derivative $L'''$, ``(..., 1) -> (..., 1, 1, 1)``."""
        flat, batch = self._flat(theta)
        return self._chunked_mean(self.potential.d3, flat).reshape(*batch, 1, 1, 1)

    def noise_cov(self, theta: Tensor) -> Tensor:
        r"""Per-example gradient variance $C = \frac1N\sum_n g_n^2 - \bar g^2$, ``(..., 1, 1)``.

        This is the noise of one example; a minibatch of $B$ has $C/B$ (times $(N-B)/(N-1)$
        without replacement).
        """
        flat, batch = self._flat(theta)
        _, _, cov = self._grid.grad_hess_cov(flat - self._data.xbar)
        return cov.reshape(*batch, 1, 1)

    def grad_hessian_noise(self, theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r"""$L'$, $L''$ and $C$ together, sharing one sigmoid per (point, example) pair.

        The fast path for Fokker–Planck grids: with $10^4$ points and $N = 10^4$ examples it
        touches about $10^8$ (point, example) pairs, each with two multiplications and a division
        on a uniform grid (a sigmoid otherwise), plus matrix products
        (``benchmarks/bench_stationary_1d.py``).

        Args:
            theta: points, ``(..., 1)``.

        Returns:
            ``(grad (..., 1), hessian (..., 1, 1), noise_cov (..., 1, 1))``.
        """
        flat, batch = self._flat(theta)
        grad, hess, cov = self._grid.grad_hess_cov(flat - self._data.xbar)
        return grad.reshape(*batch, 1), hess.reshape(*batch, 1, 1), cov.reshape(*batch, 1, 1)

    def minimizers(self) -> Tensor:
        """The two local minimizers of $L$, sorted, ``(2, 1)``.

        Found by scanning $L'$ on a grid that provably brackets every critical point and
        refining each sign change by bisection, so data that translate or tilt the minima are
        handled. Row :attr:`wide` is the wide minimum.

        Raises:
            UserError: if the data leave a number of local minima other than two, or two that
                belong to the same mixture component.
        """
        return self._critical_points()[0].unsqueeze(1)

    def barrier(self) -> Tensor:
        """The local maximum of $L$ between the two minima, ``(1,)``."""
        return self._critical_points()[1]

    def _critical_points(self) -> tuple[Tensor, Tensor]:
        if self._critical is None:
            self._critical = self._find_critical_points()
        return self._critical

    def _find_critical_points(self) -> tuple[Tensor, Tensor]:
        c = self.potential._coef
        # For theta < m1 + min x - max(xibar, 0)/k_min every u_n < m1, so U' <= k_min (u - m1)
        # and L' < 0; symmetrically L' > 0 on the right. All critical points lie in [lo, hi].
        k_min, w_max = min(c.k1, c.k2), max(self.potential.w)
        lo = c.m1 + float(self.x.min()) - max(self._data.xibar, 0.0) / k_min - 2.0 * w_max
        hi = c.m2 + float(self.x.max()) + max(-self._data.xibar, 0.0) / k_min + 2.0 * w_max
        grid = torch.linspace(lo, hi, _SCAN_POINTS, dtype=self.x.dtype, device=self.x.device)
        positive = self._grad_flat(grid) > 0
        up = (~positive[:-1]) & positive[1:]  # L' from <= 0 to > 0: a minimum
        down = positive[:-1] & (~positive[1:])  # a maximum
        n_min, n_max = int(up.sum()), int(down.sum())
        if n_min != 2:
            raise UserError(
                f"the two-minima data leave {n_min} local minima of the train loss (need 2): the "
                f"tilt or translation spread destroyed one; use smaller tilt_std/translation_std "
                f"or a potential with deeper, farther-apart minima"
            )
        minima = self._bisect(grid[:-1][up], grid[1:][up])
        maxima = self._bisect(grid[:-1][down], grid[1:][down])
        between = maxima[(maxima > minima[0]) & (maxima < minima[1])]
        assert n_max >= 1 and between.numel() == 1, "critical points of a 1-D function alternate"
        # Which component owns each minimum: the mean responsibility of component 2 there.
        u = minima.unsqueeze(1) - self.x
        owner = (torch.sigmoid(self.potential.log_ratio(u)).mean(dim=1) > 0.5).tolist()
        if owner[0] == owner[1]:
            raise UserError(
                "both local minima of the train loss belong to the same mixture component; use "
                "smaller tilt_std/translation_std or a potential with farther-apart minima"
            )
        self._wide = owner.index(self.potential.wide == 1)
        return minima, between

    def _grad_flat(self, theta: Tensor) -> Tensor:
        return self.grad(theta.unsqueeze(-1)).squeeze(-1)

    def _bisect(self, a: Tensor, b: Tensor) -> Tensor:
        """Roots of $L'$ in brackets ``[a, b]`` (vectorized), to machine precision."""
        ga = self._grad_flat(a)
        for _ in range(_BISECTION_STEPS):
            mid = 0.5 * (a + b)
            gm = self._grad_flat(mid)
            same = (gm > 0) == (ga > 0)
            a = torch.where(same, mid, a)
            ga = torch.where(same, gm, ga)
            b = torch.where(same, b, mid)
        return 0.5 * (a + b)

    # ------------------------------------------------------------------ per-example interface

    def example_grads(self, theta: Tensor, idx: Tensor) -> Tensor:
        r"""Per-example gradients $U'(\theta - x_n) + \xi_n$.

        Args:
            theta: parameters, ``(chains, 1)``.
            idx: example indices, ``(chains, B)``.

        Returns:
            ``(chains, B, 1)``.
        """
        u = theta[:, :1] - self.x[idx]
        return (self.potential.d1(u) + self.xi[idx]).unsqueeze(-1)

    def minibatch_grad(self, theta: Tensor, idx: Tensor) -> Tensor:
        r"""Mean gradient of each chain's minibatch, fused: one sigmoid per example.

        The fused formula and its CPU and portable kernels are in
        :mod:`sgdtemp.landscapes._two_minima_minibatch`. With ``theta`` requiring grad it is the
        (differentiable) mean of :meth:`example_grads`.

        Args:
            theta: parameters, ``(chains, 1)``.
            idx: example indices, ``(chains, B)``.

        Returns:
            ``(chains, 1)``, equal to ``example_grads(theta, idx).mean(1)`` up to rounding.
        """
        if theta.requires_grad:  # the fused paths below are not differentiable
            return super().minibatch_grad(theta, idx)
        th = theta[:, 0].to(torch.promote_types(theta.dtype, self.x.dtype))
        return self._minibatch(th, idx)
