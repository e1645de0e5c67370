r"""Descend on a ReLU network's objective by smoothing continuation: softplus, then sharper.

The regularized loss of a ReLU network is piecewise smooth: it has a kink wherever a unit's input
$z$ crosses 0 for some example (and, with max pooling, where two window entries tie). A descent
is drawn onto those kinks: at the minimum of ``sgdtemp shift`` on a 40-epoch digits MLP, 29
(example, unit) inputs lay within $10^{-9}$ of 0 and a random step of $10^{-8}$ changed the
gradient by $4\times10^{-3}$, so no point there has a small gradient and a trust-region Newton
method stalls (its quadratic model fails across a kink, the radius collapses). Smoothing methods
(Chen 2012) replace the kinks by smooth approximations of width $1/\beta$ and follow the minima
as $\beta$ grows: here every ReLU becomes $\mathrm{softplus}_\beta(z) = \log(1+e^{\beta z})/\beta$
and every $k\times k$ max pool the soft maximum $\log\sum e^{\beta x}/\beta$, through a
``TorchFunctionMode`` around the model's forward (so ``nn.ReLU``, ``torch.relu`` and
``F.max_pool2d`` calls are all caught, with no copy of the model). Each stage is an ordinary smooth
descent warm-started from the last; the gradient of the last stage is a convex combination of the
one-sided gradients at the nearby kinks (the $\varepsilon$-subdifferential of the unsmoothed
objective, $\varepsilon \sim 1/\beta$), so its norm below the tolerance certifies an approximate
Clarke-stationary point of the ReLU objective: the nonsmooth analogue of a vanishing gradient.
Values, Hessians and everything measured afterwards use the unsmoothed network.

Reference:
    X. Chen, "Smoothing methods for nonsmooth, nonconvex minimization", Math. Program. 134, 2012.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from sgdtemp.shift._solvers import MinimizeResult

__all__ = ["SmoothedModel", "nonsmooth_ops", "ContinuationResult", "continuation_minimize"]

_RELUS = (torch.relu, F.relu, Tensor.relu)
_POOLS = (F.max_pool2d,)
_KINKED = (torch.relu_, F.relu_, Tensor.relu_, F.leaky_relu, F.hardtanh, F.relu6, torch.abs)


def _soft_max_pool(x: Tensor, beta: float, args: tuple, kwargs: dict) -> Tensor | None:
    """Soft maximum over ``k x k`` windows with stride ``k``, or None for other pooling options."""
    k = args[0] if args else kwargs.get("kernel_size")
    stride = args[1] if len(args) > 1 else kwargs.get("stride")
    plain = all(
        kwargs.get(name, default) == default
        for name, default in (("padding", 0), ("dilation", 1), ("ceil_mode", False))
    ) and not kwargs.get("return_indices", False)
    if isinstance(k, tuple | list):
        k = k[0] if len(set(k)) == 1 else None
    if isinstance(stride, tuple | list):
        stride = stride[0] if len(set(stride)) == 1 else None
    if not (plain and isinstance(k, int) and stride in (None, k, [], ()) and len(args) <= 2):
        return None
    n, c, h, w = x.shape
    ho, wo = h // k, w // k
    windows = x[..., : ho * k, : wo * k].reshape(n, c, ho, k, wo, k)
    return torch.logsumexp(beta * windows, dim=(3, 5)) / beta


class _Soften(TorchFunctionMode):
    """Replace ReLU by softplus and k x k max pooling by a soft maximum, at sharpness beta."""

    def __init__(self, beta: float) -> None:
        super().__init__()
        self.beta = beta

    def __torch_function__(
        self, func: Any, types: Any, args: tuple = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        if func in _RELUS:
            return F.softplus(args[0], beta=self.beta, threshold=30.0)
        if func in _POOLS:
            out = _soft_max_pool(args[0], self.beta, args[1:], kwargs)
            if out is not None:
                return out
        return func(*args, **kwargs)


class _Record(TorchFunctionMode):
    """Note which nonsmooth operations a forward pass calls."""

    def __init__(self) -> None:
        super().__init__()
        self.smoothable: set[str] = set()
        self.other: set[str] = set()

    def __torch_function__(
        self, func: Any, types: Any, args: tuple = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        if func in _RELUS:
            self.smoothable.add("relu")
        elif func in _POOLS:
            if _soft_max_pool(args[0], 1.0, args[1:], kwargs) is not None:
                self.smoothable.add("max_pool2d")
            else:
                self.other.add("max_pool2d (padded, dilated or strided)")
        elif func in _KINKED:
            self.other.add(getattr(func, "__name__", str(func)))
        return func(*args, **kwargs)


def nonsmooth_ops(model: nn.Module, x: Tensor) -> tuple[set[str], set[str]]:
    """Nonsmooth operations in ``model``'s forward on ``x``: (smoothed here, left as they are)."""
    record = _Record()
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.train(False)
        with torch.no_grad(), record:
            model(x)
    finally:
        for m, flag in flags:
            m.training = flag
    return record.smoothable, record.other


class SmoothedModel(nn.Module):
    r"""``model`` with its ReLUs and max pools smoothed at sharpness $\beta$ (shares its weights).

    Parameters are those of ``model`` under the prefix ``inner.``, in the same order, so flat
    parameter vectors are interchangeable.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> x = torch.randn(4, 2)
        >>> soft = SmoothedModel(net, beta=1e4)
        >>> bool(torch.allclose(soft(x), net(x), atol=1e-3))
        True
    """

    def __init__(self, model: nn.Module, beta: float) -> None:
        super().__init__()
        self.inner = model
        self.beta = float(beta)

    def forward(self, x: Tensor) -> Tensor:
        """The smoothed network's output."""
        with _Soften(self.beta):
            return self.inner(x)


@dataclass(frozen=True)
class ContinuationResult:
    r"""The outcome of a smoothing continuation.

    Attributes:
        result: the final point with the *unsmoothed* objective's value; ``grad_norm`` is the
            smoothed gradient norm of the stage it comes from (the stationarity certificate),
            ``converged`` whether a stage met the tolerance; iterations and products are summed
            over all stages run.
        beta: the sharpness of the stage the point comes from.
        nonsmooth_grad_norm: $\|\nabla F\|$ of the unsmoothed objective at the final point (it
            stays at the size of the gradient jumps across the kinks; for information).
        stages: (beta, iterations, smoothed gradient norm) per stage.
    """

    result: MinimizeResult
    beta: float
    nonsmooth_grad_norm: float
    stages: tuple[tuple[float, int, float], ...]


def continuation_minimize(
    solver: Callable[..., MinimizeResult],
    objective: Callable[[float | None], Any],
    x0: Tensor,
    betas: tuple[float, ...],
    *,
    grad_tol: float,
    rel_grad_tol: float,
    max_iters: int,
    max_cg_iters: int,
    max_seconds: float = math.inf,
    callback: Callable[[int, float, float], None] | None = None,
) -> ContinuationResult:
    r"""Minimize along a smoothing continuation, one warm-started descent per $\beta$.

    Args:
        solver: one of :data:`~sgdtemp.shift._solvers.SOLVERS`.
        objective: ``beta -> objective`` with ``value``, ``value_and_grad`` and ``hvp`` (``None``:
            the unsmoothed objective).
        x0: start ``(d,)``.
        betas: increasing sharpnesses.
        grad_tol: absolute tolerance of every stage's smoothed gradient norm.
        rel_grad_tol: tolerance relative to the unsmoothed gradient norm at ``x0``.
        max_iters: iterations of all stages together.
        max_cg_iters: CG iterations per Newton step.
        max_seconds: wall time for all stages.
        callback: called with (iteration counted over all stages, objective, gradient norm).

    Returns:
        The point of the last stage that met the tolerance (its $\beta$ is the certificate's
        resolution) and how the stages went. A stage that fails stops the continuation; the
        result is converged when at least one stage met the tolerance (a sharper stage can fail
        from float32 rounding, its Hessian growing like $\beta$), and not converged, at the point
        where the first stage stopped, otherwise.
    """
    deadline = time.perf_counter() + max_seconds
    exact = objective(None)
    _, g0 = exact.value_and_grad(x0)
    gnorm0 = float(torch.linalg.vector_norm(g0))
    target = max(grad_tol, rel_grad_tol * gnorm0)
    x = x0
    done = hvps = grads = 0
    stages: list[tuple[float, int, float]] = []
    certified: tuple[float, Tensor, float] | None = None  # (beta, point, gradient norm)
    failure = ""
    for beta in betas:
        if done >= max_iters:
            failure = f"max_iters before smoothing beta={beta:g}"
            break
        obj = objective(beta)

        def shifted(it: int, value: float, gnorm: float, base: int = done) -> None:
            if callback is not None:
                callback(base + it, value, gnorm)

        stage = solver(
            obj.value_and_grad,
            obj.value,
            obj.hvp,
            x,
            grad_tol=target,
            rel_grad_tol=0.0,
            max_iters=max_iters - done,
            max_cg_iters=max_cg_iters,
            max_seconds=max(deadline - time.perf_counter(), 0.0),
            callback=shifted,
        )
        done += stage.iterations
        hvps += stage.num_hvps
        grads += stage.num_grads
        stages.append((beta, stage.iterations, stage.grad_norm))
        if not stage.converged:
            failure = f"{stage.message} at smoothing beta={beta:g}"
            if certified is None:  # not even the smoothest stage: report where it stopped
                certified = (beta, stage.x, stage.grad_norm)
            break
        x = stage.x
        certified = (beta, x, stage.grad_norm)
    assert certified is not None
    beta, x, gnorm = certified
    converged = any(norm <= target for _, _, norm in stages)
    value, g = exact.value_and_grad(x)
    if not converged:
        message = failure
    elif failure:  # a sharper stage failed (float precision, budget): keep the last certified point
        message = f"converged (softplus continuation to beta={beta:g}; {failure})"
    else:
        message = f"converged (softplus continuation to beta={beta:g})"
    result = MinimizeResult(
        x=x,
        value=value,
        grad_norm=gnorm,
        initial_grad_norm=gnorm0,
        converged=converged,
        iterations=done,
        num_hvps=hvps,
        num_grads=grads + 2,
        message=message,
    )
    return ContinuationResult(
        result=result,
        beta=beta,
        nonsmooth_grad_norm=float(torch.linalg.vector_norm(g)),
        stages=tuple(stages),
    )
