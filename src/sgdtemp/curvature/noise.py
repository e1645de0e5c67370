r"""Gradient-noise covariance of SGD and its alignment with the Hessian.

The per-example gradient covariance at $\theta$ over $N$ examples,

$$C = \frac1N\sum_{n=1}^N g_n g_n^\top - \bar g\,\bar g^\top, \qquad g_n = \nabla\ell_n(\theta),\;
\bar g = \nabla L(\theta),$$

is the diffusion matrix of the SGD SDE $d\theta = -\nabla L\,dt + \sqrt{T C}\,dW$ (with
$T = \eta/(B(1-\beta))$, see :mod:`sgdtemp.theory.temperature`). Per-example gradients come from
``vmap(grad(...))``. Its relation to curvature is summarized by
$\mathrm{tr}(C H^{-1})$ (the Takeuchi term of the expected sampling shift-curvature,
$\mathbb E[\tfrac12 s^\top H s] \approx \tfrac12(\tfrac1N + \tfrac1M)\,\mathrm{tr}(H^{-1}C)$) and
by the overlap of the top eigenspaces of $C$ and $H$.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from sgdtemp.curvature._base import (
    DampedOperator,
    LinearOperatorLike,
    default_generator,
    operator_dim,
    operator_dtype_device,
)
from sgdtemp.curvature._model import LossFn
from sgdtemp.curvature._operator import AbstractModelOperator
from sgdtemp.curvature.inverse import conjugate_gradient
from sgdtemp.curvature.lanczos import Eigenpairs, top_eigenvalues
from sgdtemp.curvature.trace import TraceEstimate, random_probes
from sgdtemp.errors import UserError

__all__ = ["GradientCovarianceOperator", "NoiseCurvatureAlignment", "noise_curvature_alignment"]


class GradientCovarianceOperator(AbstractModelOperator):
    r"""The centered per-example gradient covariance $C$ as ``op @ v``.

    ``op @ V`` computes $\frac1N\sum_n g_n (g_n^\top V) - \bar g(\bar g^\top V)$ from per-example
    gradients; when all $N \times d$ of them fit in ``cache_bytes`` they are computed once and
    kept, otherwise every product recomputes them batch by batch. :meth:`trace` is exact:
    $\mathrm{tr}\,C = \frac1N\sum_n\|g_n\|^2 - \|\bar g\|^2$.

    Args:
        model: the network (never modified).
        loss_fn: ``loss_fn(output, target) -> scalar`` averaging over its batch; it is called on
            batches of one example to get $\ell_n$.
        batches: ``(x, y)`` tensors or an iterable of ``(x, y)`` batches.
        params: flat parameters ``(d,)`` (default: the model's own).
        batch_size: split a single ``(x, y)`` pair into batches of this size.
        cache_bytes: memory allowed for caching the per-example gradients.

    Example:
        >>> import torch
        >>> from sgdtemp.curvature import GradientCovarianceOperator
        >>> model = torch.nn.Linear(1, 1, bias=False)
        >>> x = torch.tensor([[1.0], [2.0], [3.0]]); y = torch.zeros(3, 1)
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(1.0)
        >>> C = GradientCovarianceOperator(model, torch.nn.MSELoss(), (x, y))
        >>> round(C.trace(), 4)  # g_n = 2 w x_n^2 = (2, 8, 18): population variance 392/9
        43.5556
    """

    cache_bytes: int = 2**28
    _cache: Tensor | None = None
    _mean: Tensor | None = None
    _second_moment_trace: float | None = None

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: LossFn,
        batches: Any,
        *,
        params: Tensor | None = None,
        batch_size: int | None = None,
        cache_bytes: int = 2**28,
    ) -> None:
        super().__init__(model, loss_fn, batches, params=params, batch_size=batch_size)
        self.cache_bytes = int(cache_bytes)

    def _fits(self) -> bool:
        ml = self.model_loss
        itemsize = torch.empty((), dtype=ml.dtype).element_size()
        return ml.num_examples * ml.dim * itemsize <= self.cache_bytes

    def _blocks(self) -> list[Tensor] | Any:
        if self._cache is not None:
            return [self._cache]
        if self._fits():
            self._cache = torch.cat(list(self.model_loss.per_example_grads(self.params)))
            return [self._cache]
        return self.model_loss.per_example_grads(self.params)

    def _stats(self) -> None:
        r"""One pass for the mean gradient and $\frac1N\sum\|g_n\|^2$."""
        ml = self.model_loss
        total = torch.zeros(ml.dim, dtype=ml.dtype, device=ml.device)
        sq = 0.0
        for g in self._blocks():  # (n, d)
            total += g.sum(dim=0)
            sq += float((g.double() ** 2).sum())
        self._mean = total / ml.num_examples
        self._second_moment_trace = sq / ml.num_examples

    @property
    def mean_gradient(self) -> Tensor:
        r"""$\bar g = \nabla L(\theta)$, ``(d,)``."""
        if self._mean is None or self._second_moment_trace is None:
            self._stats()
        assert self._mean is not None
        return self._mean

    def trace(self) -> float:
        r"""$\mathrm{tr}\,C = \frac1N\sum_n\|g_n\|^2 - \|\bar g\|^2$ (exact, one pass)."""
        mean = self.mean_gradient
        assert self._second_moment_trace is not None
        return self._second_moment_trace - float((mean.double() ** 2).sum())

    def _apply(self, rows: Tensor) -> Tensor:
        ml = self.model_loss
        v = rows.T  # (d, k)
        acc = torch.zeros_like(v)
        total = torch.zeros(ml.dim, dtype=ml.dtype, device=ml.device)
        for g in self._blocks():  # (n, d)
            acc += g.T @ (g @ v)
            total += g.sum(dim=0)
        mean = total / ml.num_examples
        out = acc / ml.num_examples - torch.outer(mean, mean @ v)
        return out.T


@dataclass(frozen=True)
class NoiseCurvatureAlignment:
    r"""How the gradient noise $C$ lines up with the curvature $H$.

    Attributes:
        trace_ratio: Hutchinson estimate of $\mathrm{tr}(C (H + \delta I)^{-1})$ with its stderr
            (each probe costs one CG solve). Equals $d$ when $C = H$ and $\delta = 0$.
        noise_trace: $\mathrm{tr}\,C$ when the operator knows it exactly, else NaN.
        overlap: $\|U_C^\top U_H\|_F^2 / k \in [0, 1]$, the overlap of the top-$k$ eigenspaces
            (1: same subspace; about $k/d$ for random subspaces).
        noise_eigenpairs: top-$k$ eigenpairs of $C$.
        hessian_eigenpairs: top-$k$ eigenpairs of $H$.
        damping: $\delta$ used in the solves.
        cg_converged: whether every CG solve converged without meeting negative curvature.
    """

    trace_ratio: TraceEstimate
    noise_trace: float
    overlap: float
    noise_eigenpairs: Eigenpairs
    hessian_eigenpairs: Eigenpairs
    damping: float
    cg_converged: bool


def noise_curvature_alignment(
    noise: LinearOperatorLike,
    hessian: LinearOperatorLike,
    *,
    k: int = 5,
    num_probes: int = 8,
    damping: float | None = None,
    cg_tol: float = 1e-4,
    cg_max_iters: int | None = None,
    generator: torch.Generator | None = None,
) -> NoiseCurvatureAlignment:
    r"""Alignment of a noise covariance $C$ with a Hessian $H$: $\mathrm{tr}(CH^{-1})$ and overlap.

    $\mathrm{tr}(C(H+\delta I)^{-1}) = \mathbb E_z[z^\top (H+\delta I)^{-1} C z]$ is estimated
    with ``num_probes`` Rademacher probes, solving all $(H+\delta I)x = Cz$ together by CG. A
    network Hessian is singular (and often indefinite) at a minimum, so the damping defaults to
    $10^{-3}\lambda_{\max}(H)$; negative curvature stops a solve and clears ``cg_converged``.

    Args:
        noise: the covariance $C$ ``(d, d)``, e.g. a :class:`GradientCovarianceOperator`.
        hessian: the Hessian $H$ ``(d, d)``.
        k: dimension of the compared top eigenspaces.
        num_probes: Hutchinson probes for the trace ratio.
        damping: $\delta$ (default $10^{-3}\lambda_{\max}(H)$).
        cg_tol: relative residual tolerance of the solves.
        cg_max_iters: iteration cap of the solves.
        generator: source of randomness (default: seeded with ``DEFAULT_SEED``).

    Returns:
        The alignment summary.

    Raises:
        UserError: if the operators differ in size or ``k``/``num_probes`` are out of range.

    Example:
        >>> import torch
        >>> A = torch.diag(torch.tensor([4.0, 2.0, 1.0, 0.5], dtype=torch.float64))
        >>> res = noise_curvature_alignment(A, A, k=2, damping=0.0,
        ...                                 generator=torch.Generator().manual_seed(0))
        >>> round(res.trace_ratio.value, 6), round(res.overlap, 6)  # C = H: tr = d, overlap 1
        (4.0, 1.0)
    """
    dim = operator_dim(hessian)
    if operator_dim(noise) != dim:
        raise UserError(f"noise ({operator_dim(noise)}) and Hessian ({dim}) sizes differ")
    if num_probes < 2:
        raise UserError(f"num_probes must be at least 2 for a standard error, got {num_probes}")
    generator = default_generator(generator, operator_dtype_device(hessian)[1])
    h_pairs = top_eigenvalues(hessian, k, generator=generator)
    c_pairs = top_eigenvalues(noise, k, generator=generator)
    if damping is None:
        damping = 1e-3 * max(float(h_pairs.values[0]), 0.0)
    cross = c_pairs.vectors.T @ h_pairs.vectors.to(c_pairs.vectors.dtype)  # (k, k)
    overlap = float((cross**2).sum()) / k
    dtype = h_pairs.vectors.dtype
    z = random_probes(
        dim, num_probes, dtype=dtype, device=h_pairs.vectors.device, generator=generator
    )
    cz = noise @ z
    solve = conjugate_gradient(
        DampedOperator(hessian, damping) if damping else hessian,
        cz,
        tol=cg_tol,
        max_iters=cg_max_iters,
    )
    samples = (z * solve.x).sum(dim=0)
    m = samples.numel()
    estimate = TraceEstimate(
        value=float(samples.double().mean()),
        stderr=float(samples.double().std(unbiased=True)) / m**0.5,
        num_products=m * (solve.num_iters + 1),
        method="hutchinson",
        samples=samples,
    )
    noise_trace = noise.trace() if isinstance(noise, GradientCovarianceOperator) else float("nan")
    return NoiseCurvatureAlignment(
        trace_ratio=estimate,
        noise_trace=noise_trace,
        overlap=overlap,
        noise_eigenpairs=c_pairs,
        hessian_eigenpairs=h_pairs,
        damping=float(damping),
        cg_converged=solve.all_converged,
    )
