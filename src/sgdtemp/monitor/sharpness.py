r"""The sharpness SGD feels: $\lambda_{\max}$ of the lr-scaled Hessian of the probe loss (Lanczos).

SGD with per-parameter learning rates $D = \mathrm{diag}(\eta_p)$ and L2 weight decay
$W = \mathrm{diag}(\delta_p)$ follows $\theta \leftarrow \theta - D(\nabla L + W\theta)$, whose
linearization is stable along every direction iff $\lambda_{\max}(D^{1/2}(H + W)D^{1/2})$ is below
the threshold of :func:`sgdtemp.theory.stability.stability_threshold`. With one learning rate
$\eta$ and one weight decay $\delta$ that is $\eta(\lambda_{\max}(H) + \delta)$, the
$\eta\lambda_{\max}$ of J. Cohen et al. (ICLR 2021). The eigenvalue comes from
:func:`sgdtemp.curvature.top_eigenvalues` on a :class:`sgdtemp.curvature.HessianOperator` of the
probe, warm-started from the previous probe's eigenvector, within a budget of Hessian-vector
products. The largest Ritz value never exceeds $\lambda_{\max}$, so an unconverged value is a
lower bound: a crossing it shows is certain.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sgdtemp.curvature import HessianOperator, ModelLoss, top_eigenvalues

__all__ = ["Sharpness", "measure_sharpness"]


@dataclass(frozen=True)
class Sharpness:
    r"""$\lambda_{\max}$ of the Hessian SGD follows on the probe.

    Attributes:
        lambda_max: $\lambda_{\max}(H + W)$ of the probe loss plus the L2 term, or ``None`` when
            the learning rate differs between parameters (then only ``lr_lambda_max`` is one
            number).
        lr_lambda_max: $\lambda_{\max}(D^{1/2}(H + W)D^{1/2})$, $\eta\lambda_{\max}$ for one lr.
        residual: Ritz residual bound on ``lr_lambda_max``.
        converged: whether the residual met the tolerance (else the values are lower bounds).
        num_matvecs: Hessian-vector products spent.
        vector: the top eigenvector ``(d,)`` (the next probe's warm start).
    """

    lambda_max: float | None
    lr_lambda_max: float
    residual: float
    converged: bool
    num_matvecs: int
    vector: Tensor


class _ScaledHessian:
    r"""$D^{1/2}(H + W)D^{1/2}$ as ``op @ x`` for per-parameter ``lr`` and ``weight_decay``."""

    def __init__(self, hessian: HessianOperator, lr: Tensor, weight_decay: Tensor) -> None:
        self.hessian, self.root, self.decay = hessian, lr.sqrt(), weight_decay
        self.shape, self.dtype, self.device = hessian.shape, hessian.dtype, hessian.device

    def __matmul__(self, x: Tensor) -> Tensor:
        root = self.root if x.dim() == 1 else self.root[:, None]
        decay = self.decay if x.dim() == 1 else self.decay[:, None]
        y = root * x
        return root * (self.hessian @ y + decay * y)


def measure_sharpness(
    model_loss: ModelLoss,
    theta: Tensor,
    *,
    lr: Tensor,
    weight_decay: Tensor,
    max_iters: int = 20,
    tol: float = 1e-2,
    v0: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Sharpness:
    r"""$\lambda_{\max}$ of $H + W$ and of $D^{1/2}(H + W)D^{1/2}$ at ``theta``.

    Args:
        model_loss: the model, loss and probe.
        theta: flat parameters ``(d,)``.
        lr: per-parameter learning rates ``(d,)`` (0 for parameters the optimizer does not move).
        weight_decay: per-parameter L2 coefficients ``(d,)``.
        max_iters: budget of Hessian-vector products.
        tol: relative Ritz residual at which Lanczos stops (the eigenvalue error is at most the
            residual).
        v0: warm start ``(d,)``: the previous eigenvector.
        generator: randomness of the start vector.

    Returns:
        The sharpness; values are lower bounds when not converged.
    """
    hessian = HessianOperator.at(model_loss, theta)
    assert isinstance(hessian, HessianOperator)
    lr = lr.to(device=hessian.device, dtype=hessian.dtype)
    decay = weight_decay.to(device=hessian.device, dtype=hessian.dtype)
    lr_max = float(lr.max())
    one_lr = bool((lr == lr_max).all())
    one_decay = bool((decay == decay[0]).all())
    op = hessian if one_lr and one_decay else _ScaledHessian(hessian, lr, decay)
    dim = hessian.shape[0]
    pairs = top_eigenvalues(
        op, 1, tol=tol, max_iters=min(max_iters, dim), v0=v0, generator=generator
    )
    top = float(pairs.values[0])
    residual = float(pairs.residual_norms[0])
    lam: float | None
    if op is hessian:
        lam = top + float(decay[0])
        lr_lam, residual_lr = lr_max * lam, lr_max * residual
    else:
        lam = top / lr_max if one_lr else None
        lr_lam, residual_lr = top, residual
    hessian.clear_cache()
    return Sharpness(
        lambda_max=lam,
        lr_lambda_max=lr_lam,
        residual=residual_lr,
        converged=pairs.converged,
        num_matvecs=pairs.num_matvecs,
        vector=pairs.vectors[:, 0],
    )
