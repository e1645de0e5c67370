r"""Randomized trace estimators: Hutchinson and Hutch++.

Both take any square operator with ``shape`` and ``@`` (a dense tensor included) and apply it to
all probes at once as a matrix of columns, so a model operator can reuse one graph per batch for
all probes.

References:
    M. F. Hutchinson, "A stochastic estimator of the trace of the influence matrix for Laplacian
    smoothing splines", Communications in Statistics - Simulation and Computation 18(3), 1989.

    R. A. Meyer, C. Musco, C. Musco, D. P. Woodruff, "Hutch++: Optimal Stochastic Trace
    Estimation", SOSA 2021 (arXiv 2010.09649).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from sgdtemp.curvature._base import (
    LinearOperatorLike,
    default_generator,
    operator_dim,
    operator_dtype_device,
    quadratic_forms,
)
from sgdtemp.errors import UserError

__all__ = ["TraceEstimate", "hutchinson_trace", "hutchpp_trace", "random_probes"]

_DISTRIBUTIONS = ("rademacher", "normal")


@dataclass(frozen=True)
class TraceEstimate:
    r"""A stochastic trace estimate.

    Attributes:
        value: the estimate of $\mathrm{tr}\,A$.
        stderr: its standard error. For Hutchinson, the sample standard deviation of the per-probe
            estimates over $\sqrt m$. For Hutch++, the same quantity for the residual
            Hutchinson term only, *conditioned on the sketch*: it omits the sketch's own
            randomness and is exact (0) when the operator's rank is at most the sketch size.
        num_products: how many operator products were spent: matrix-vector products, or
            quadratic forms $z^\top A z$ where the operator computes them directly (Taylor mode
            of a model Hessian, no matrix-vector product at all).
        method: ``"hutchinson"`` or ``"hutchpp"``.
        samples: the per-probe estimates ``(m,)`` of the Hutchinson (or residual) term.
    """

    value: float
    stderr: float
    num_products: int
    method: str
    samples: Tensor

    @property
    def num_matvecs(self) -> int:
        """Deprecated name of :attr:`num_products` (removed in the next release)."""
        warnings.warn(
            "TraceEstimate.num_matvecs is deprecated; use num_products",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.num_products


def random_probes(
    dim: int,
    num: int,
    *,
    distribution: str = "rademacher",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Random probe vectors with $\mathbb E[zz^\top] = I$, as columns ``(dim, num)``.

    Args:
        dim: vector length $d$.
        num: number of probes.
        distribution: ``"rademacher"`` (entries $\pm1$) or ``"normal"``.
        dtype: floating dtype (default: torch's default dtype).
        device: device (default: CPU).
        generator: source of randomness (default: a fresh one seeded with
            :data:`~sgdtemp.curvature._base.DEFAULT_SEED`, so a call without one is reproducible).

    Returns:
        ``(dim, num)`` tensor.

    Raises:
        UserError: on an unknown distribution.

    Example:
        >>> z = random_probes(4, 3, generator=torch.Generator().manual_seed(0))
        >>> z.shape, bool((z.abs() == 1).all())
        (torch.Size([4, 3]), True)
    """
    if distribution not in _DISTRIBUTIONS:
        raise UserError(f"distribution must be one of {_DISTRIBUTIONS}, got {distribution!r}")
    dtype = dtype or torch.get_default_dtype()
    generator = default_generator(generator, device)
    gen_device = generator.device
    if distribution == "rademacher":
        bits = torch.randint(0, 2, (dim, num), generator=generator, device=gen_device)
        z = bits.to(dtype) * 2 - 1
    else:
        z = torch.randn(dim, num, generator=generator, device=gen_device, dtype=dtype)
    return z.to(device=device) if device is not None else z


def _check_num(name: str, value: int, minimum: int) -> None:
    if not isinstance(value, int) or value < minimum:
        raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _sample_stderr(samples: Tensor) -> float:
    m = samples.numel()
    if m < 2:
        return math.nan
    return float(samples.double().std(unbiased=True)) / math.sqrt(m)


def hutchinson_trace(
    op: LinearOperatorLike,
    num_matvecs: int,
    *,
    distribution: str = "rademacher",
    generator: torch.Generator | None = None,
) -> TraceEstimate:
    r"""Hutchinson's estimate of $\mathrm{tr}\,A$ with ``num_matvecs`` probes.

    With probes $z_i$, $\mathbb E[z z^\top] = I$,

    $$\widehat{\mathrm{tr}}\,A = \frac1m\sum_{i=1}^m z_i^\top A z_i ,$$

    unbiased because $\mathbb E[z^\top A z] = \mathrm{tr}(A\,\mathbb E[zz^\top])$. Rademacher
    probes have variance $2(\|A\|_F^2 - \sum_i A_{ii}^2)$ per probe for symmetric $A$, the least
    among i.i.d. probe distributions. All probes go through one ``op @ Z`` with ``Z`` of shape
    ``(d, m)``, or one ``op.quadratic_forms(Z)`` when the operator has that cheaper path
    (:class:`~sgdtemp.curvature.HessianOperator` does: Taylor-mode forward propagation).

    Args:
        op: square operator ``(d, d)`` (anything with ``shape`` and ``@``).
        num_matvecs: number of probes $m \ge 1$ (the stderr needs $m \ge 2$; it is NaN at 1).
        distribution: ``"rademacher"`` or ``"normal"``.
        generator: source of randomness (default: seeded with ``DEFAULT_SEED``).

    Returns:
        The estimate with its sample standard error.

    Raises:
        UserError: on fewer than one probe or a non-square operator.

    Example:
        >>> A = torch.diag(torch.tensor([1.0, 2.0, 3.0]))
        >>> est = hutchinson_trace(A, 8, generator=torch.Generator().manual_seed(0))
        >>> est.value, est.stderr  # Rademacher probes are exact on a diagonal matrix
        (6.0, 0.0)
    """
    _check_num("num_matvecs", num_matvecs, 1)
    dim = operator_dim(op)
    dtype, device = operator_dtype_device(op)
    generator = default_generator(generator, device)
    z = random_probes(
        dim, num_matvecs, distribution=distribution, dtype=dtype, device=device, generator=generator
    )
    samples = quadratic_forms(op, z)  # (m,): z_j^T A z_j
    return TraceEstimate(
        value=float(samples.double().mean()),
        stderr=_sample_stderr(samples),
        num_products=num_matvecs,
        method="hutchinson",
        samples=samples,
    )


def hutchpp_trace(
    op: LinearOperatorLike,
    num_matvecs: int,
    *,
    distribution: str = "rademacher",
    generator: torch.Generator | None = None,
) -> TraceEstimate:
    r"""Hutch++ estimate of $\mathrm{tr}\,A$ (Meyer et al. 2021) with ``num_matvecs`` products.

    A third of the budget sketches the range of $A$: $Q = \mathrm{orth}(AS)$ for a random
    $S$ of $s = \lfloor m/3 \rfloor$ columns. The trace is $\mathrm{tr}(Q^\top A Q)$ (exact on
    that subspace, $s$ products) plus Hutchinson's estimate on the deflated operator
    $(I - QQ^\top)A(I - QQ^\top)$ with the remaining $m - 2s$ probes. For PSD matrices with a
    decaying spectrum this needs $O(1/\varepsilon)$ instead of $O(1/\varepsilon^2)$ products.

    The reported ``stderr`` is the sample standard error of the residual Hutchinson term given the
    sketch (see :class:`TraceEstimate`); it is 0 when $A$ has rank at most $s$.

    Args:
        op: square operator ``(d, d)``.
        num_matvecs: total budget $m \ge 3$.
        distribution: ``"rademacher"`` or ``"normal"``.
        generator: source of randomness (default: seeded with ``DEFAULT_SEED``).

    Returns:
        The estimate.

    Raises:
        UserError: on a budget below 3 or a non-square operator.

    Example:
        >>> u = torch.randn(50, 2, generator=torch.Generator().manual_seed(1))
        >>> A = u @ u.T  # rank 2: the sketch captures it exactly
        >>> est = hutchpp_trace(A, 9, generator=torch.Generator().manual_seed(0))
        >>> abs(est.value - float(torch.trace(A))) < 1e-3
        True
    """
    _check_num("num_matvecs", num_matvecs, 3)
    dim = operator_dim(op)
    dtype, device = operator_dtype_device(op)
    generator = default_generator(generator, device)
    s = num_matvecs // 3
    g = num_matvecs - 2 * s
    kw = {"distribution": distribution, "dtype": dtype, "device": device, "generator": generator}
    sketch = random_probes(dim, s, **kw)  # type: ignore[arg-type]
    q, _ = torch.linalg.qr(op @ sketch)  # (d, s)
    low_rank = float(torch.trace(q.T @ (op @ q)).double())
    z = random_probes(dim, g, **kw)  # type: ignore[arg-type]
    z_perp = z - q @ (q.T @ z)  # (d, g)
    samples = quadratic_forms(op, z_perp)  # (g,)
    return TraceEstimate(
        value=low_rank + float(samples.double().mean()),
        stderr=_sample_stderr(samples),
        num_products=2 * s + g,
        method="hutchpp",
        samples=samples,
    )
