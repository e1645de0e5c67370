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

Fast paths. Minibatch gradients need one sigmoid per example. Grid evaluations of $L'$, $L''$
and $C$ need one sigmoid per (grid point, example) pair (on a uniform grid not even that:
$e^{-\delta}$ factors into per-point, per-example and shared tables, see
``TwoMinimaLoss._sigmoid_filler``); every other term is a polynomial in the example's data, so
the sums over examples are matrix products of the sigmoid matrix with a few data columns (data
centered on their means for accuracy).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import Tensor

from sgdtemp.errors import UserError
from sgdtemp.landscapes._base import AbstractPerExampleLoss

__all__ = ["MixturePotential", "TwoMinimaLoss", "sample_two_minima_data"]

# Elements of one (grid points x examples) block in grid evaluations: large enough to amortize
# per-call overhead, small enough to stay in cache.
_CHUNK_ELEMENTS = 1 << 17
# Up to this many (point, example) pairs, reductions are elementwise products and sums instead of
# matrix products (BLAS calls cost more than the work on tiny blocks).
_SMALL_ELEMENTS = 1 << 15
# Grid evaluations on a uniform grid skip the per-pair sigmoid when the grid's D(theta) is affine
# in the point index to within this many ulps of max |D| (a linspace grid: a few), and no exponent
# of the factors exceeds _EXP_SAFE in magnitude.
_UNIFORM_ULPS = 64
_EPS64 = 2.0**-52
_EXP_SAFE = 300.0
# Minibatch gradients are computed for blocks of chains with about this many examples at once, so
# that the intermediate arrays stay in cache (measured about 2.5x faster than one block of 4096x32).
_MINIBATCH_CHUNK_ELEMENTS = 1 << 15
# sigmoid(delta) is exactly 1 in float64 above 37 (we use 37.5) and below e^-40 under -40.
_SATURATED_HIGH = 37.5
_SATURATED_LOW = -40.0
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


def _affine_rows(q: Tensor, coef: Tensor, lin: Tensor, *, out: Tensor) -> None:
    """``out = q + coef @ lin``: ``(1, N), (rows, 2), (2, N) -> (rows, N)``."""
    if out.numel() <= _SMALL_ELEMENTS:
        torch.addcmul(q + coef[:, :1] * lin[0], coef[:, 1:], lin[1], out=out)
    else:
        torch.addmm(q, coef, lin, out=out)


def _row_products(block: Tensor, cols: Tensor, *, out: Tensor) -> None:
    """``out = block @ cols.T``: ``(rows, N), (k, N) -> (rows, k)``."""
    if block.numel() * cols.shape[0] <= _SMALL_ELEMENTS:
        torch.sum(block.unsqueeze(1) * cols, dim=2, out=out)
    else:
        torch.mm(block, cols.t(), out=out)


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
        c = potential._coef
        n = self.n_examples
        # Centered data: u = theta - x_n = (theta - xbar) - xt_n.
        self._xbar = float(x.mean())
        self._xibar = float(xi.mean())
        xt = x - self._xbar
        # g_n = k1 (th - m1) + xibar + h_n - sigma_n (D(th) - 2 c2 xt_n), th = theta - xbar
        h = (xi - self._xibar) - c.k1 * xt
        self._xt = xt.contiguous()
        self._xt_min, self._xt_max = float(xt.min()), float(xt.max())
        self._h = h.contiguous()
        h_mean = float(h.mean())
        self._data_moments = (
            float(xt.mean()),
            float((xt * xt).mean()),
            h_mean,
            float(((h - h_mean) ** 2).mean()),
            float((h * xt).mean()),
        )  # mean xt, mean xt^2, mean h, var h, mean h xt
        ones = torch.ones_like(xt)
        # delta_n = delta(theta') - D(theta') xt_n + c2 xt_n^2 = q + [delta, D] @ [1; -xt]
        self._q = (c.c2 * xt * xt).unsqueeze(0)
        self._lin = torch.stack([ones, -xt])
        # Columns whose sigma- and sigma^2-weighted means give every grid quantity, (k, N) / N.
        self._cols1 = torch.stack([ones, xt, xt * xt, h, xt * h]) / n
        self._cols2 = torch.stack([ones, xt, xt * xt]) / n
        self._critical: tuple[Tensor, Tensor] | None = None
        self._wide = potential.wide
        # In theta (not theta' = theta - xbar): D = d0 + 2 c2 theta,
        # delta = delta0 + (delta1 + c2 theta) theta, gradient base g0 + k1 theta.
        xbar = self._xbar
        self._fused_constants = (
            c.c1 - 2.0 * c.c2 * xbar,
            c.c0 - c.c1 * xbar + c.c2 * xbar**2,
            c.c1 - 2.0 * c.c2 * xbar,
            self._xibar - c.k1 * (xbar + c.m1),
        )

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

    def _sigmoid_moments(self, tp: Tensor, *, centered: bool) -> tuple[Tensor, Tensor | None]:
        r"""Sigmoid-weighted data moments at centered points ``tp`` (G,).

        With $\sigma_n = \sigma(\delta(\theta' - \tilde x_n))$ and, when ``centered``,
        $\tau_n = \sigma_n - \sigma(\delta(\theta'))$ (small when the translations are: this
        keeps the variance free of cancellation).

        Args:
            tp: centered points $\theta' = \theta - \bar x$, ``(G,)``.
            centered: weight by $\tau$ and also return the $\tau^2$-weighted moments;
                otherwise weight by $\sigma$ and return only the first two columns.

        Returns:
            ``(M1, M2)``: ``M1[:, j]`` is the mean over examples of $\tau_n f_{nj}$ with
            $f = (1, \tilde x, \tilde x^2, h, \tilde x h)$, ``(G, 5)`` (of $\sigma_n f_{nj}$ for
            $j < 2$, ``(G, 2)``, when not ``centered``); ``M2[:, j]`` is the mean of
            $\tau_n^2 (1, \tilde x, \tilde x^2)_j$, ``(G, 3)``, or None.
        """
        dtype = tp.dtype
        cols1 = (self._cols1 if centered else self._cols1[:2]).to(dtype)
        cols2 = self._cols2.to(dtype)
        # Points where every sigma_n is saturated need no sigmoid: there tau = 0 and
        # sigma_n = 1 (delta > 37: exactly) or 0 (delta < -40: up to e^-40).
        lo, hi = self._log_ratio_range(tp)
        high = lo > _SATURATED_HIGH
        active = ~(high | (hi < _SATURATED_LOW))
        if centered:
            m1 = tp.new_zeros((tp.numel(), cols1.shape[0]))
            m2: Tensor | None = tp.new_zeros((tp.numel(), cols2.shape[0]))
        else:
            m1 = high.to(dtype).unsqueeze(1) * cols1.sum(dim=1)  # saturated: sigma_n = 1 or 0
            m2 = None
        rows = torch.nonzero(active).squeeze(1)
        if rows.numel() > 0:
            a1, a2 = self._sigmoid_moments_dense(tp[rows], cols1, cols2 if centered else None)
            m1[rows] = a1
            if m2 is not None and a2 is not None:
                m2[rows] = a2
        return m1, m2

    def _log_ratio_range(self, tp: Tensor) -> tuple[Tensor, Tensor]:
        r"""Least and largest $\delta(\theta' - \tilde x_n)$ over the examples, each ``(G,)``."""
        c = self.potential._coef
        u_lo, u_hi = tp - self._xt_max, tp - self._xt_min
        d_lo, d_hi = self.potential.log_ratio(u_lo), self.potential.log_ratio(u_hi)
        least, largest = torch.minimum(d_lo, d_hi), torch.maximum(d_lo, d_hi)
        if c.c2 != 0.0:  # the vertex of the parabola, where it lies inside the range
            vertex = -c.c1 / (2.0 * c.c2)
            inside = (u_lo <= vertex) & (vertex <= u_hi)
            at_vertex = c.c0 - c.c1**2 / (4.0 * c.c2)
            if c.c2 > 0:
                least = torch.where(inside, torch.clamp(least, max=at_vertex), least)
            else:
                largest = torch.where(inside, torch.clamp(largest, min=at_vertex), largest)
        return least, largest

    def _sigmoid_moments_dense(
        self, tp: Tensor, cols1: Tensor, cols2: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """:meth:`_sigmoid_moments` evaluated at every point (``cols2`` given: centered)."""
        c = self.potential._coef
        delta0 = self.potential.log_ratio(tp)
        d = c.c1 + 2.0 * c.c2 * tp  # D(theta'), (G,)
        sig0 = torch.sigmoid(delta0).unsqueeze(1)
        g = tp.numel()
        m1 = tp.new_empty((g, cols1.shape[0]))
        m2 = tp.new_empty((g, cols2.shape[0])) if cols2 is not None else None
        rows = self._rows()
        buf = tp.new_empty((min(rows, g), self.n_examples))
        fill = self._sigmoid_filler(tp, delta0, d, min(rows, g))
        for start in range(0, g, rows):
            stop = min(g, start + rows)
            block = buf[: stop - start]
            fill(start, stop, block)  # sigma_n at each point, (rows, N)
            if m2 is not None:
                block.sub_(sig0[start:stop])
            _row_products(block, cols1, out=m1[start:stop])
            if m2 is not None and cols2 is not None:
                block.square_()
                _row_products(block, cols2, out=m2[start:stop])
        return m1, m2

    def _sigmoid_filler(
        self, tp: Tensor, delta0: Tensor, d: Tensor, rows: int
    ) -> Callable[[int, int, Tensor], None]:
        r"""A function that writes $\sigma_n(\theta'_i)$ for points ``start:stop`` into a block.

        In general one sigmoid per (point, example) pair. On a uniform grid (the Fokker–Planck
        case) no pair needs a transcendental: with $\delta_n(\theta') = \delta(\theta') -
        D(\theta')\tilde x_n + c_2\tilde x_n^2$ and $D_i = D_{i_0} + (i - i_0)\Delta$ affine in
        the point index,

        $$e^{-\delta_n(\theta'_i)} = e^{-\delta(\theta'_i)}\;
        e^{D_{i_0}\tilde x_n - c_2\tilde x_n^2}\; e^{(i - i_0)\Delta\,\tilde x_n},$$

        a per-point factor, a per-block factor ($N$ exponentials per block) and a table shared by
        all blocks, so $\sigma_n = 1/(1 + e^{-\delta_n})$ costs two multiplications and a
        division. Every factor is a correctly rounded exponential of a small exponent, so this is
        as accurate as the direct sigmoid (whose argument carries the rounding of the sum). The
        grid counts as uniform when $D_i$ deviates from the line through its ends by at most a
        few ulps of $\max|D|$; the factors are used only where no exponent exceeds
        ``_EXP_SAFE`` in magnitude (their products can then only overflow to ``inf`` or underflow
        to 0 where $\sigma$ is 0 or 1 to double precision).
        """
        c = self.potential._coef
        g = tp.numel()
        x_abs = max(abs(self._xt_min), abs(self._xt_max))
        uniform = g >= 2 and tp.dtype == torch.float64
        if uniform:
            d_max = float(d.abs().max())
            slope = (d[-1] - d[0]) / (g - 1)
            line = torch.arange(g, dtype=tp.dtype, device=tp.device).mul_(slope).add_(d[0])
            uniform = float((d - line).abs().max()) <= _UNIFORM_ULPS * _EPS64 * d_max
            uniform = uniform and float(delta0.abs().max()) <= _EXP_SAFE
            uniform = uniform and d_max * x_abs + abs(c.c2) * x_abs**2 <= _EXP_SAFE
        if not uniform:
            q, lin = self._q.to(tp.dtype), self._lin.to(tp.dtype)
            coef = torch.stack([delta0, d], dim=1)  # (G, 2)

            def direct(start: int, stop: int, block: Tensor) -> None:
                _affine_rows(q, coef[start:stop], lin, out=block)  # delta_n, (rows, N)
                block.sigmoid_()

            return direct

        xt = self._xt.to(tp.dtype)
        quad = c.c2 * xt * xt
        per_point = torch.exp(-delta0).unsqueeze(1)  # (G, 1)
        offsets = torch.arange(rows, dtype=tp.dtype, device=tp.device) * slope
        table = torch.exp(torch.outer(offsets, xt))  # (rows, N)

        def factored(start: int, stop: int, block: Tensor) -> None:
            per_block = torch.exp(torch.addcmul(-quad, d[start], xt))  # (N,)
            torch.mul(table[: stop - start], per_point[start:stop], out=block)
            block.mul_(per_block).add_(1.0).reciprocal_()  # 1 / (1 + e^(-delta_n))

        return factored

    def _grad_hess_cov(self, tp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r"""$L'$, $L''$ and $C$ at centered flat points ``tp`` from one pass over the data.

        The mixture part of example $n$'s gradient is $s_n = w_n\sigma_n$ with
        $w_n = D(\theta') - 2c_2\tilde x_n$; split $\sigma_n = \sigma_0 + \tau_n$ and
        $s_n = D\sigma_0 + r_n$, $r_n = -2c_2\sigma_0\tilde x_n + w_n\tau_n$, so that
        $g_n - \bar g = (h_n - \bar h) - (r_n - \bar r)$ involves only small terms.
        """
        c = self.potential._coef
        m1, m2 = self._sigmoid_moments(tp, centered=True)
        assert m2 is not None
        t0, t1, t2, th, txh = m1.unbind(1)
        q0, q1, q2 = m2.unbind(1)
        mu1, mu2, h_mean, h_var, hx_mean = self._data_moments
        d = c.c1 + 2.0 * c.c2 * tp
        delta0 = self.potential.log_ratio(tp)
        sig0, sig0c = torch.sigmoid(delta0), torch.sigmoid(-delta0)
        c2 = c.c2
        r_mean = -2.0 * c2 * sig0 * mu1 + d * t0 - 2.0 * c2 * t1
        r_sq = (
            4.0 * c2**2 * sig0**2 * mu2
            + d * d * q0
            + 4.0 * c2**2 * q2
            - 4.0 * c2 * sig0 * d * t1
            + 8.0 * c2**2 * sig0 * t2
            - 4.0 * c2 * d * q1
        )
        hr_mean = -2.0 * c2 * sig0 * hx_mean + d * th - 2.0 * c2 * txh
        cov = h_var - 2.0 * (hr_mean - h_mean * r_mean) + (r_sq - r_mean * r_mean)
        grad = c.k1 * (tp - c.m1) + self._xibar + h_mean - (d * sig0 + r_mean)
        # U''(u_n) = k1 + (k2 - k1) sigma_n - sigma_n (1 - sigma_n) w_n^2, with
        # sigma (1 - sigma) = sig0 sig0c + (1 - 2 sig0) tau - tau^2.
        w_sq_mean = d * d - 4.0 * c2 * d * mu1 + 4.0 * c2**2 * mu2
        w_sq_t = d * d * t0 - 4.0 * c2 * d * t1 + 4.0 * c2**2 * t2
        w_sq_q = d * d * q0 - 4.0 * c2 * d * q1 + 4.0 * c2**2 * q2
        spread = sig0 * sig0c * w_sq_mean + (sig0c - sig0) * w_sq_t - w_sq_q
        hess = c.k1 + (c.k2 - c.k1) * (sig0 + t0) - spread
        return grad, hess, cov.clamp_min(0.0)

    # ------------------------------------------------------------------ AbstractLandscape

    def loss(self, theta: Tensor) -> Tensor:
        """Train loss, ``(..., 1) -> (...)``."""
        flat, batch = self._flat(theta)
        out = self._chunked_mean(self.potential.value, flat) + self.xi.mean().to(flat) * flat
        return out.reshape(batch)

    def grad(self, theta: Tensor) -> Tensor:
        """Gradient, ``(..., 1) -> (..., 1)``."""
        flat, batch = self._flat(theta)
        c = self.potential._coef
        tp = flat - self._xbar
        m1, _ = self._sigmoid_moments(tp, centered=False)
        s_mean = (c.c1 + 2.0 * c.c2 * tp) * m1[:, 0] - 2.0 * c.c2 * m1[:, 1]
        out = c.k1 * (tp - c.m1) + self._xibar - s_mean
        return out.reshape(*batch, 1)

    def hessian(self, theta: Tensor) -> Tensor:
        """Hessian, ``(..., 1) -> (..., 1, 1)``."""
        flat, batch = self._flat(theta)
        _, hess, _ = self._grad_hess_cov(flat - self._xbar)
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
        _, _, cov = self._grad_hess_cov(flat - self._xbar)
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
        grad, hess, cov = self._grad_hess_cov(flat - self._xbar)
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
        lo = c.m1 + float(self.x.min()) - max(self._xibar, 0.0) / k_min - 2.0 * w_max
        hi = c.m2 + float(self.x.max()) + max(-self._xibar, 0.0) / k_min + 2.0 * w_max
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

        With $\theta' = \theta - \bar x$, $\tilde x_b = x_b - \bar x$ and $\sigma_b$ the
        responsibility of component 2 at $u_b = \theta' - \tilde x_b$,

        $$\hat g = \kappa_1(\theta' - m_1) + \bar\xi + \overline{h}_{\mathcal B}
        - D(\theta')\,\overline{\sigma}_{\mathcal B} + 2c_2\,\overline{\sigma\tilde x}_{\mathcal B},
        \qquad h_b = (\xi_b - \bar\xi) - \kappa_1\tilde x_b .$$

        On the CPU the gathers and sums run in compiled loops around PyTorch's sigmoid
        (:mod:`sgdtemp.landscapes._two_minima_kernels`); elsewhere in PyTorch operations. With
        ``theta`` requiring grad it is the (differentiable) mean of :meth:`example_grads`.

        Args:
            theta: parameters, ``(chains, 1)``.
            idx: example indices, ``(chains, B)``.

        Returns:
            ``(chains, 1)``, equal to ``example_grads(theta, idx).mean(1)`` up to rounding.
        """
        if theta.requires_grad:  # the fused paths below are not differentiable
            return super().minibatch_grad(theta, idx)
        th = theta[:, 0].to(torch.promote_types(theta.dtype, self.x.dtype))
        if {theta.device.type, idx.device.type, self.x.device.type} == {"cpu"}:
            return self._minibatch_grad_cpu(th, idx)
        return self._minibatch_grad_torch(th, idx)

    def _minibatch_grad_cpu(self, th: Tensor, idx: Tensor) -> Tensor:
        """:meth:`minibatch_grad` with compiled gathers and sums around PyTorch's sigmoid."""
        # Imported here: Numba costs 0.4 s to import, paid only by code that simulates.
        from sgdtemp.landscapes._two_minima_kernels import finish_gradient, gather_arguments

        c = self.potential._coef
        d0, delta0, delta1, g0 = self._fused_constants
        chains, batch = idx.shape
        xt, h = (t.to(th.dtype).numpy() for t in (self._xt, self._h))
        th_np = th.contiguous().numpy()
        idx_np = idx.contiguous().numpy()
        out = torch.empty(chains, dtype=th.dtype)
        out_np = out.numpy()
        rows = min(chains, max(1, _MINIBATCH_CHUNK_ELEMENTS // batch))
        z = torch.empty((rows, batch), dtype=th.dtype)
        z_np, w, h_sum = (
            z.numpy(),
            np.empty((rows, batch), th_np.dtype),
            np.empty(rows, th_np.dtype),
        )
        for start in range(0, chains, rows):
            stop = min(chains, start + rows)
            r = stop - start
            gather_arguments(
                th_np[start:stop],
                idx_np[start:stop],
                xt,
                h,
                d0,
                delta0,
                delta1,
                c.c2,
                z_np[:r],
                w[:r],
                h_sum[:r],
            )
            z[:r].sigmoid_()
            finish_gradient(
                th_np[start:stop],
                z_np[:r],
                w[:r],
                h_sum[:r],
                g0,
                c.k1,
                1.0 / batch,
                out_np[start:stop],
            )
        return out.unsqueeze(1)

    def _minibatch_grad_torch(self, th: Tensor, idx: Tensor) -> Tensor:
        """:meth:`minibatch_grad` in PyTorch operations (any device)."""
        c = self.potential._coef
        d0, delta0, delta1, g0 = self._fused_constants
        chains, batch = idx.shape
        # Per chain, once: -D(theta'), delta(theta') and the base k1 (theta' - m1) + xibar.
        neg_d = th.mul(-2.0 * c.c2).sub_(d0).unsqueeze(1)
        delta = th.mul(c.c2).add_(delta1).mul_(th).add_(delta0).unsqueeze(1)
        total = torch.empty_like(th)  # per chain: sum over the batch of h_b + sigma_b w_b
        idx = idx.contiguous()
        # Blocks of chains keep the (rows, B) intermediates in cache; few, fused operations per
        # block, since with small batches the per-call cost dominates.
        rows = max(1, _MINIBATCH_CHUNK_ELEMENTS // batch)
        for start in range(0, chains, rows):
            stop = min(chains, start + rows)
            flat = idx[start:stop].view(-1)
            xb = self._xt.index_select(0, flat).view(stop - start, batch)
            hb = self._h.index_select(0, flat).view(stop - start, batch)
            w = torch.add(neg_d[start:stop], xb, alpha=c.c2)  # c2 xt_b - D
            sig = torch.addcmul(delta[start:stop], xb, w).sigmoid_()  # sigma_b
            w.add_(xb, alpha=c.c2)  # w_b = 2 c2 xt_b - D
            torch.sum(hb.addcmul_(sig, w), dim=1, out=total[start:stop])
        return th.mul(c.k1).add_(g0).add_(total, alpha=1.0 / batch).unsqueeze(1)
