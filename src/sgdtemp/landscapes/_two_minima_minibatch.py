r"""Fused minibatch gradients of the two-minima loss: one sigmoid per sampled example.

:meth:`~sgdtemp.landscapes.TwoMinimaLoss.minibatch_grad` delegates here. With
$\theta' = \theta - \bar x$, $\tilde x_b = x_b - \bar x$ and $\sigma_b$ the responsibility of
component 2 at $u_b = \theta' - \tilde x_b$,

$$\hat g = \kappa_1(\theta' - m_1) + \bar\xi + \overline{h}_{\mathcal B}
- D(\theta')\,\overline{\sigma}_{\mathcal B} + 2c_2\,\overline{\sigma\tilde x}_{\mathcal B},
\qquad h_b = (\xi_b - \bar\xi) - \kappa_1\tilde x_b .$$

On the CPU the gathers and sums run in compiled loops around PyTorch's sigmoid
(:mod:`sgdtemp.landscapes._two_minima_kernels`); elsewhere in PyTorch operations.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from sgdtemp.landscapes._two_minima_grid import CenteredData

if TYPE_CHECKING:  # the maths module imports this one
    from sgdtemp.landscapes.two_minima import MixturePotential

__all__ = ["MinibatchGradient"]

# Minibatch gradients are computed for blocks of chains with about this many examples at once, so
# that the intermediate arrays stay in cache (measured about 2.5x faster than one block of 4096x32).
_MINIBATCH_CHUNK_ELEMENTS = 1 << 15


class MinibatchGradient:
    """The mean gradient of each chain's minibatch, fused (not differentiable).

    Args:
        potential: the mixture potential $U$.
        data: the centered training data.
    """

    def __init__(self, potential: MixturePotential, data: CenteredData) -> None:
        self.potential = potential
        self._xt, self._h = data.xt, data.h
        c = potential._coef
        # In theta (not theta' = theta - xbar): D = d0 + 2 c2 theta,
        # delta = delta0 + (delta1 + c2 theta) theta, gradient base g0 + k1 theta.
        xbar = data.xbar
        self._fused_constants = (
            c.c1 - 2.0 * c.c2 * xbar,
            c.c0 - c.c1 * xbar + c.c2 * xbar**2,
            c.c1 - 2.0 * c.c2 * xbar,
            data.xibar - c.k1 * (xbar + c.m1),
        )

    def __call__(self, th: Tensor, idx: Tensor) -> Tensor:
        """Gradients ``(chains, 1)`` at ``th`` ``(chains,)`` for indices ``idx`` ``(chains, B)``."""
        if {th.device.type, idx.device.type, self._xt.device.type} == {"cpu"}:
            return self.cpu(th, idx)
        return self.portable(th, idx)

    def cpu(self, th: Tensor, idx: Tensor) -> Tensor:
        """The gradient with compiled gathers and sums around PyTorch's sigmoid."""
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

    def portable(self, th: Tensor, idx: Tensor) -> Tensor:
        """The gradient in PyTorch operations (any device)."""
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
