r"""Conjugate gradients for $(A + \delta I)x = b$ with matrix-free symmetric operators.

Several right-hand sides are solved together (one ``op @ P`` per iteration for all of them), so a
model operator reuses its graph across columns. Non-positive curvature along a search direction
(an indefinite $A + \delta I$) stops that column and is reported rather than hidden.

Reference:
    M. R. Hestenes and E. Stiefel, "Methods of conjugate gradients for solving linear systems",
    J. Res. Nat. Bur. Standards 49(6), 1952.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sgdtemp.curvature._base import LinearOperatorLike, operator_dim
from sgdtemp.errors import UserError

__all__ = ["CGResult", "conjugate_gradient"]


@dataclass(frozen=True)
class CGResult:
    r"""Solution of a (damped) symmetric linear system by conjugate gradients.

    Attributes:
        x: the solution, same shape as the right-hand side (``(d,)`` or ``(d, k)``).
        num_iters: iterations run (each one operator product on all live columns).
        residual_norms: final $\|b - (A+\delta I)x\|$ per column, ``(k,)``.
        converged: per column, whether the relative residual met ``tol``, ``(k,)`` bool.
        negative_curvature: per column, whether a direction with $p^\top(A+\delta I)p \le 0$
            stopped it, ``(k,)`` bool.
    """

    x: Tensor
    num_iters: int
    residual_norms: Tensor
    converged: Tensor
    negative_curvature: Tensor

    @property
    def all_converged(self) -> bool:
        """Whether every column converged."""
        return bool(self.converged.all())


def conjugate_gradient(
    op: LinearOperatorLike,
    b: Tensor,
    *,
    damping: float = 0.0,
    tol: float = 1e-6,
    max_iters: int | None = None,
) -> CGResult:
    r"""Solve $(A + \delta I)\,x = b$ by conjugate gradients, for one or several right-hand sides.

    Args:
        op: symmetric operator $A$ ``(d, d)``.
        b: right-hand side ``(d,)`` or columns ``(d, k)``.
        damping: $\delta$ added to the diagonal.
        tol: stop a column when $\|r\| \le$ ``tol`` $\cdot \|b\|$.
        max_iters: iteration cap (default $10 d$, at most 1000).

    Returns:
        The solution and per-column diagnostics.

    Raises:
        UserError: if ``b`` does not match the operator or ``tol`` is not positive.

    Example:
        >>> A = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
        >>> res = conjugate_gradient(A, torch.tensor([1.0, 2.0], dtype=torch.float64))
        >>> torch.allclose(A @ res.x, torch.tensor([1.0, 2.0], dtype=torch.float64)), res.num_iters
        (True, 2)
    """
    dim = operator_dim(op)
    if b.shape[0] != dim or b.dim() not in (1, 2):
        raise UserError(f"right-hand side must have shape ({dim},) or ({dim}, k), got {b.shape}")
    if not tol > 0:
        raise UserError(f"tol must be positive, got {tol}")
    vector = b.dim() == 1
    rhs = b.unsqueeze(1) if vector else b  # (d, k)
    k = rhs.shape[1]
    cap = max_iters if max_iters is not None else min(10 * dim, 1000)
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    p = r.clone()
    rr = (r * r).sum(dim=0)  # (k,)
    target = tol * torch.linalg.vector_norm(rhs, dim=0)
    live = torch.sqrt(rr) > target
    negative = torch.zeros(k, dtype=torch.bool, device=rhs.device)
    iters = 0
    while bool(live.any()) and iters < cap:
        idx = live.nonzero().flatten()
        ap = op @ p[:, idx]
        if damping:
            ap = ap + damping * p[:, idx]
        iters += 1
        pap = (p[:, idx] * ap).sum(dim=0)
        bad = pap <= 0
        if bool(bad.any()):
            negative[idx[bad]] = True
            live[idx[bad]] = False
            keep = ~bad
            idx, ap, pap = idx[keep], ap[:, keep], pap[keep]
            if idx.numel() == 0:
                break
        alpha = rr[idx] / pap
        x[:, idx] += alpha * p[:, idx]
        r[:, idx] -= alpha * ap
        rr_new = (r[:, idx] * r[:, idx]).sum(dim=0)
        p[:, idx] = r[:, idx] + (rr_new / rr[idx]) * p[:, idx]
        rr[idx] = rr_new
        live[idx] = torch.sqrt(rr_new) > target[idx]
    res = torch.sqrt(rr)
    converged = (res <= target) & ~negative
    return CGResult(
        x=x[:, 0] if vector else x,
        num_iters=iters,
        residual_norms=res,
        converged=converged,
        negative_curvature=negative,
    )
