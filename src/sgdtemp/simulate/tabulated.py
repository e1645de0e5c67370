r"""A 1-D landscape tabulated on a uniform grid: its SDE costs O(chains) per step.

The per-example two-minima loss costs $O(N)$ per evaluation; the SDE only needs $L'$ and
$\sqrt{C}$, which are smooth, so they are tabulated once on a uniform grid
$\theta_i = \text{lo} + ih$ and interpolated by index arithmetic (no search):

- $L'$ by the cubic Hermite interpolant of $(L'_i, L''_i)$: $C^1$, exact at the nodes, error
  $O(h^4)$; :meth:`Tabulated1D.hessian` is its derivative (error $O(h^3)$) and
  :meth:`Tabulated1D.loss` its integral from ``lo`` (exact at ``lo``), so the three are consistent.
- $\sqrt{C}$ by linear interpolation (error $O(h^2)$); :meth:`Tabulated1D.noise_cov` is its square.
- Outside ``[lo, hi]`` the landscape continues as the quadratic Taylor extension at the end
  node ($L'$ linear with slope $L''$, $C$ constant), so chains that wander off the table are
  still pulled back.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sgdtemp.errors import UserError
from sgdtemp.landscapes._base import AbstractLandscape

__all__ = ["Tabulated1D"]

_BISECTION_STEPS = 60


class Tabulated1D(AbstractLandscape):
    r"""Tabulated $L$, $L'$, $L''$, $C$ on the uniform grid ``linspace(lo, hi, n)``, interpolated.

    Args:
        lo: left end of the grid.
        hi: right end of the grid, ``hi > lo``.
        loss: $L$ at the nodes, ``(n,)`` with ``n >= 3``; only ``loss[0]`` anchors the loss.
        grad: $L'$ at the nodes, ``(n,)``.
        hessian: $L''$ at the nodes, ``(n,)``.
        noise_cov: $C \ge 0$ at the nodes, ``(n,)``.

    Raises:
        UserError: on malformed tables.

    Example:
        >>> from sgdtemp.landscapes import QuadraticLoss
        >>> quad = QuadraticLoss(torch.eye(1, dtype=torch.float64),
        ...                      torch.tensor([[1.0], [3.0]], dtype=torch.float64))
        >>> tab = Tabulated1D.from_landscape(quad, -5.0, 5.0, 101)
        >>> tab.minimizers()
        tensor([[-2.]], dtype=torch.float64)
    """

    name = "tabulated"
    dim = 1

    def __init__(
        self, lo: float, hi: float, loss: Tensor, grad: Tensor, hessian: Tensor, noise_cov: Tensor
    ) -> None:
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise UserError(f"need finite lo < hi, got lo={lo}, hi={hi}")
        tables = {"loss": loss, "grad": grad, "hessian": hessian, "noise_cov": noise_cov}
        n = loss.shape[0] if isinstance(loss, Tensor) and loss.ndim == 1 else -1
        for label, t in tables.items():
            if not isinstance(t, Tensor) or t.ndim != 1 or t.shape[0] != n or n < 3:
                raise UserError(f"{label} must be a 1-D tensor of the same length >= 3 as loss")
            if not t.is_floating_point() or not bool(torch.isfinite(t).all()):
                raise UserError(f"{label} must hold finite floating-point values")
        if float(noise_cov.min()) < 0:
            raise UserError("noise_cov must be >= 0 at every node")
        self.lo, self.hi, self.n_grid = float(lo), float(hi), int(n)
        self.step = (self.hi - self.lo) / (n - 1)
        dtype = torch.promote_types(loss.dtype, torch.float64)
        l0, d1, d2 = loss.to(dtype), grad.to(dtype), hessian.to(dtype)
        sd = noise_cov.to(dtype).sqrt()
        h = self.step
        p0, p1, m0, m1 = d1[:-1], d1[1:], h * d2[:-1], h * d2[1:]
        zero = d1.new_zeros(1)
        # Rows: 0 = left extension, 1..n-1 = cells, n = right extension; local t per row
        # (theta = lo + h (row - 1 + t)), so the left row has t < 1 and the right row t >= 0.
        g0 = torch.cat([d1[:1] - m0[:1], p0, d1[-1:]])
        g1 = torch.cat([m0[:1], m0, m1[-1:]])
        g2 = torch.cat([zero, -3 * p0 - 2 * m0 + 3 * p1 - m1, zero])
        g3 = torch.cat([zero, 2 * p0 + m0 - 2 * p1 + m1, zero])
        e0 = torch.cat([sd[:1], sd[:-1], sd[-1:]])
        e1 = torch.cat([zero, sd[1:] - sd[:-1], zero])
        cell_integral = h * (0.5 * (p0 + p1) + (m0 - m1) / 12.0)
        left_anchor = l0[:1] - h * (g0[:1] + 0.5 * g1[:1])  # loss at t = 0 of the left row
        anchors = l0[0] + torch.cat([zero, torch.cumsum(cell_integral, 0)])
        self._grad_coef = torch.stack([g0, g1, g2, g3])  # (4, n + 1)
        self._sd_coef = torch.stack([e0, e1])  # (2, n + 1)
        self._anchor = torch.cat([left_anchor, anchors])  # (n + 1,)
        self._minimizers: Tensor | None = None

    @classmethod
    def from_landscape(
        cls, landscape: AbstractLandscape, lo: float, hi: float, n_grid: int
    ) -> Tabulated1D:
        """Tabulate a 1-D landscape on ``linspace(lo, hi, n_grid)``.

        Args:
            landscape: any landscape with ``dim == 1``.
            lo: left end of the grid.
            hi: right end of the grid.
            n_grid: number of grid points, at least 3.

        Returns:
            The tabulated landscape.

        Raises:
            UserError: if the landscape is not 1-D or the grid is malformed.
        """
        if landscape.dim != 1:
            raise UserError(f"can only tabulate 1-D landscapes, got dim={landscape.dim}")
        if isinstance(n_grid, bool) or not isinstance(n_grid, int) or n_grid < 3:
            raise UserError(f"n_grid must be an integer >= 3, got {n_grid!r}")
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise UserError(f"need finite lo < hi, got lo={lo}, hi={hi}")
        grid = torch.linspace(lo, hi, n_grid, dtype=torch.float64).unsqueeze(1)
        return cls(
            lo,
            hi,
            landscape.loss(grid),
            landscape.grad(grid)[:, 0],
            landscape.hessian(grid)[:, 0, 0],
            landscape.noise_cov(grid)[:, 0, 0].clamp_min(0.0),
        )

    @property
    def grid(self) -> Tensor:
        """The nodes, ``(n,)``."""
        return torch.linspace(
            self.lo, self.hi, self.n_grid, dtype=self._anchor.dtype, device=self._anchor.device
        )

    # ------------------------------------------------------------------ evaluation

    def _locate(self, theta: Tensor) -> tuple[Tensor, Tensor, torch.Size]:
        """Row and local coordinate of each point, for ``theta`` of shape ``(..., 1)``."""
        if theta.shape[-1:] != (1,):
            raise UserError(f"theta must have shape (..., 1), got {tuple(theta.shape)}")
        s = (theta.reshape(-1).to(self._anchor.dtype) - self.lo) / self.step + 1.0
        row = s.floor().clamp_(0, self.n_grid).to(torch.int64)
        return row, s - row, theta.shape[:-1]

    def loss(self, theta: Tensor) -> Tensor:
        """Interpolated loss (integral of :meth:`grad` from ``lo``), ``(..., 1) -> (...)``."""
        row, t, batch = self._locate(theta)
        g0, g1, g2, g3 = self._grad_coef.index_select(1, row)
        poly = t * (g0 + t * (g1 / 2 + t * (g2 / 3 + t * g3 / 4)))
        return (self._anchor.index_select(0, row) + self.step * poly).reshape(batch)

    def grad(self, theta: Tensor) -> Tensor:
        """Interpolated $L'$ (cubic Hermite), ``(..., 1) -> (..., 1)``."""
        row, t, batch = self._locate(theta)
        return self._grad_at(row, t).reshape(*batch, 1)

    def _grad_at(self, row: Tensor, t: Tensor) -> Tensor:
        g0, g1, g2, g3 = self._grad_coef.index_select(1, row)
        return g0 + t * (g1 + t * (g2 + t * g3))

    def hessian(self, theta: Tensor) -> Tensor:
        """Derivative of :meth:`grad`, ``(..., 1) -> (..., 1, 1)``."""
        row, t, batch = self._locate(theta)
        _, g1, g2, g3 = self._grad_coef.index_select(1, row)
        return ((g1 + t * (2 * g2 + 3 * t * g3)) / self.step).reshape(*batch, 1, 1)

    def noise_sqrt(self, theta: Tensor) -> Tensor:
        r"""Linearly interpolated $\sqrt{C}$, ``(..., 1) -> (..., 1)``."""
        row, t, batch = self._locate(theta)
        e0, e1 = self._sd_coef.index_select(1, row)
        return (e0 + t * e1).reshape(*batch, 1)

    def noise_cov(self, theta: Tensor) -> Tensor:
        r"""Square of :meth:`noise_sqrt`, ``(..., 1) -> (..., 1, 1)``."""
        return self.noise_sqrt(theta).square().unsqueeze(-1)

    def minimizers(self) -> Tensor:
        """Local minimizers of the interpolated loss, sorted, ``(k, 1)``.

        Roots of :meth:`grad` where the nodal values change sign from <= 0 to > 0 (refined by
        bisection), plus a minimum of the quadratic extension beyond either end.
        """
        if self._minimizers is None:
            self._minimizers = self._find_minimizers()
        return self._minimizers

    def _find_minimizers(self) -> Tensor:
        g0 = self._grad_coef[0]
        nodal = torch.cat([g0[1:-1], g0[-1:]])  # L'_0 .. L'_{n-1}
        positive = nodal > 0
        rows = torch.nonzero((~positive[:-1]) & positive[1:]).squeeze(1) + 1
        lo_t, hi_t = torch.zeros_like(rows, dtype=g0.dtype), torch.ones_like(rows, dtype=g0.dtype)
        for _ in range(_BISECTION_STEPS):
            mid = 0.5 * (lo_t + hi_t)
            right = self._grad_at(rows, mid) > 0
            hi_t = torch.where(right, mid, hi_t)
            lo_t = torch.where(right, lo_t, mid)
        found = [self.lo + self.step * (rows - 1 + 0.5 * (lo_t + hi_t))]
        # Quadratic extensions: L' = a + b (theta - end); a minimum beyond the end needs b > 0.
        (a_left, b_left), (a_right, b_right) = self._end_slopes()
        if b_left > 0 and a_left > 0:
            found.append(g0.new_tensor([self.lo - a_left / b_left]))
        if b_right > 0 and a_right < 0:
            found.append(g0.new_tensor([self.hi - a_right / b_right]))
        return torch.cat(found).sort().values.unsqueeze(1)

    def _end_slopes(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """$(L', L'')$ at ``lo`` and at ``hi``."""
        h = self.step
        g = self._grad_coef
        b_left = float(g[1, 0]) / h
        a_left = float(g[0, 0] + g[1, 0])  # left row at t = 1 is lo
        return (a_left, b_left), (float(g[0, -1]), float(g[1, -1]) / h)

    # ------------------------------------------------------------------ SDE fast path

    def sde_table(self, temperature: float, dt: float) -> Tensor:
        r"""Per-row coefficients of one Euler–Maruyama step in grid units, ``(6, n + 1)``.

        In the grid coordinate $s = (\theta - \text{lo})/h + 1$ a step is
        $s \mathrel{+}= \sum_{j<4} D_j t^j + z\,(E_0 + E_1 t)$ with $D_j = -dt\,g_j/h$ (drift) and
        $E_j = \sqrt{T\,dt}\,e_j/h$ (diffusion), where row $= \lfloor s\rfloor$ clamped to the
        table and $t = s - \text{row}$.

        Args:
            temperature: $T \ge 0$.
            dt: time step.

        Returns:
            ``[D_0, D_1, D_2, D_3, E_0, E_1]`` stacked, ``(6, n + 1)``.
        """
        drift = (-dt / self.step) * self._grad_coef
        diffusion = (math.sqrt(temperature * dt) / self.step) * self._sd_coef
        return torch.cat([drift, diffusion]).contiguous()

    def to_grid_units(self, theta: Tensor) -> Tensor:
        r"""Grid coordinate $s = (\theta - \text{lo})/h + 1$, same shape."""
        return (theta - self.lo) / self.step + 1.0

    def from_grid_units(self, s: Tensor) -> Tensor:
        """Inverse of :meth:`to_grid_units`."""
        return self.lo + self.step * (s - 1.0)
