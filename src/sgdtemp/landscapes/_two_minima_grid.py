r"""Fast grid evaluations of the two-minima loss: $L'$, $L''$ and $C$ as matrix products.

:class:`~sgdtemp.landscapes.TwoMinimaLoss` (the maths, in :mod:`sgdtemp.landscapes.two_minima`)
delegates its grid evaluations here. Every example's gradient and curvature is a polynomial in
its (centered) data times the responsibility $\sigma_n = \sigma(\delta(\theta' - \tilde x_n))$,
so the sums over examples are matrix products of the $(\text{points} \times N)$ sigmoid matrix
with a few data columns. That matrix needs one sigmoid per (point, example) pair, and on a
uniform grid not even that: $e^{-\delta}$ factors into per-point, per-example and shared tables
(:meth:`GridEvaluator._sigmoid_filler`). Data are centered on their means for accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # the maths module imports this one
    from sgdtemp.landscapes.two_minima import MixturePotential

__all__ = ["CenteredData", "GridEvaluator"]

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
# sigmoid(delta) is exactly 1 in float64 above 37 (we use 37.5) and below e^-40 under -40.
_SATURATED_HIGH = 37.5
_SATURATED_LOW = -40.0


@dataclass(frozen=True)
class CenteredData:
    r"""The training data centered on their means, shared by the fast kernels.

    With $\theta' = \theta - \bar x$ and $\tilde x_n = x_n - \bar x$, example $n$'s gradient
    is $g_n = \kappa_1(\theta' - m_1) + \bar\xi + h_n - \sigma_n(D(\theta') - 2c_2\tilde x_n)$
    with $h_n = (\xi_n - \bar\xi) - \kappa_1\tilde x_n$.

    Attributes:
        xbar: $\bar x$.
        xibar: $\bar\xi$.
        xt: $\tilde x$, ``(N,)``, contiguous.
        h: $h$, ``(N,)``, contiguous.
        xt_min: least $\tilde x_n$.
        xt_max: largest $\tilde x_n$.
    """

    xbar: float
    xibar: float
    xt: Tensor
    h: Tensor
    xt_min: float
    xt_max: float

    @classmethod
    def build(cls, potential: MixturePotential, x: Tensor, xi: Tensor) -> CenteredData:
        """Center ``x`` and ``xi`` (``(N,)`` each) for ``potential``."""
        c = potential._coef
        xbar, xibar = float(x.mean()), float(xi.mean())
        xt = x - xbar
        h = (xi - xibar) - c.k1 * xt
        return cls(xbar, xibar, xt.contiguous(), h.contiguous(), float(xt.min()), float(xt.max()))


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


class GridEvaluator:
    r"""$L'$, $L''$ and $C$ of one data set at many points, from one pass over the data.

    All methods take centered flat points $\theta' = \theta - \bar x$, ``(G,)``.

    Args:
        potential: the mixture potential $U$.
        data: the centered training data.
    """

    def __init__(self, potential: MixturePotential, data: CenteredData) -> None:
        self.potential = potential
        self.data = data
        c = potential._coef
        xt, h = data.xt, data.h
        n = self.n_examples = int(xt.numel())
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

    def _rows(self) -> int:
        return max(1, _CHUNK_ELEMENTS // self.n_examples)

    def grad(self, tp: Tensor) -> Tensor:
        """$L'$ at centered flat points ``tp`` (G,), one sigmoid per (point, example) pair."""
        c = self.potential._coef
        m1, _ = self.sigmoid_moments(tp, centered=False)
        s_mean = (c.c1 + 2.0 * c.c2 * tp) * m1[:, 0] - 2.0 * c.c2 * m1[:, 1]
        return c.k1 * (tp - c.m1) + self.data.xibar - s_mean

    def grad_hess_cov(self, tp: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r"""$L'$, $L''$ and $C$ at centered flat points ``tp`` from one pass over the data.

        The mixture part of example $n$'s gradient is $s_n = w_n\sigma_n$ with
        $w_n = D(\theta') - 2c_2\tilde x_n$; split $\sigma_n = \sigma_0 + \tau_n$ and
        $s_n = D\sigma_0 + r_n$, $r_n = -2c_2\sigma_0\tilde x_n + w_n\tau_n$, so that
        $g_n - \bar g = (h_n - \bar h) - (r_n - \bar r)$ involves only small terms.
        """
        c = self.potential._coef
        m1, m2 = self.sigmoid_moments(tp, centered=True)
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
        grad = c.k1 * (tp - c.m1) + self.data.xibar + h_mean - (d * sig0 + r_mean)
        # U''(u_n) = k1 + (k2 - k1) sigma_n - sigma_n (1 - sigma_n) w_n^2, with
        # sigma (1 - sigma) = sig0 sig0c + (1 - 2 sig0) tau - tau^2.
        w_sq_mean = d * d - 4.0 * c2 * d * mu1 + 4.0 * c2**2 * mu2
        w_sq_t = d * d * t0 - 4.0 * c2 * d * t1 + 4.0 * c2**2 * t2
        w_sq_q = d * d * q0 - 4.0 * c2 * d * q1 + 4.0 * c2**2 * q2
        spread = sig0 * sig0c * w_sq_mean + (sig0c - sig0) * w_sq_t - w_sq_q
        hess = c.k1 + (c.k2 - c.k1) * (sig0 + t0) - spread
        return grad, hess, cov.clamp_min(0.0)

    def sigmoid_moments(self, tp: Tensor, *, centered: bool) -> tuple[Tensor, Tensor | None]:
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
        lo, hi = self.log_ratio_range(tp)
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

    def log_ratio_range(self, tp: Tensor) -> tuple[Tensor, Tensor]:
        r"""Least and largest $\delta(\theta' - \tilde x_n)$ over the examples, each ``(G,)``."""
        c = self.potential._coef
        u_lo, u_hi = tp - self.data.xt_max, tp - self.data.xt_min
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
        """:meth:`sigmoid_moments` evaluated at every point (``cols2`` given: centered)."""
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
        x_abs = max(abs(self.data.xt_min), abs(self.data.xt_max))
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

        xt = self.data.xt.to(tp.dtype)
        quad = c.c2 * xt * xt
        per_point = torch.exp(-delta0).unsqueeze(1)  # (G, 1)
        offsets = torch.arange(rows, dtype=tp.dtype, device=tp.device) * slope
        table = torch.exp(torch.outer(offsets, xt))  # (rows, N)

        def factored(start: int, stop: int, block: Tensor) -> None:
            per_block = torch.exp(torch.addcmul(-quad, d[start], xt))  # (N,)
            torch.mul(table[: stop - start], per_point[start:stop], out=block)
            block.mul_(per_block).add_(1.0).reciprocal_()  # 1 / (1 + e^(-delta_n))

        return factored
