r"""Reparametrization check: the three curvature terms are invariant, $\mathrm{tr}H$ is not.

A ReLU network is unchanged when a layer's weights and bias are multiplied by $c > 0$ and the next
layer's weights by $1/c$ (positive homogeneity; Dinh et al. 2017). On the flat parameters this is
$\theta' = D\theta$ with a diagonal $D$, so the loss as a function of $\theta'$ is
$L'(\theta') = L(D^{-1}\theta')$ and

$$H' = D^{-1} H D^{-1},\quad s' = Ds,\quad b' = Db,\quad \Sigma' = D\Sigma D .$$

Hence $s^\top\tilde Hs$, $b^\top Hb$ and $\mathrm{tr}(H\Sigma)$ are unchanged while
$\mathrm{tr}H$ and $\lambda_{\max}(H)$ change (theory.md §1.4). :func:`reparametrization_check`
recomputes all five through the rescaled model's own Hessians, so it tests the claim rather than
the algebra. Only the data losses enter (weight decay and proximal terms are not invariant under
rescaling).

Reference:
    L. Dinh, R. Pascanu, S. Bengio, Y. Bengio, "Sharp Minima Can Generalize For Deep Nets",
    ICML 2017.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from sgdtemp.curvature import HessianOperator, ModelLoss, quadratic_forms, top_eigenvalues
from sgdtemp.curvature._base import default_generator
from sgdtemp.curvature._model import LossFn, eval_mode
from sgdtemp.errors import UserError
from sgdtemp.shift.measure import ShiftResult

__all__ = ["ReparametrizationCheck", "relu_rescaling", "reparametrization_check"]

_AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
# modules f with f(c x) = c f(x) for c > 0
_HOMOGENEOUS = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Flatten,
    nn.Identity,
    nn.Dropout,
)


def relu_rescaling(model: nn.Module, factor: float = 2.0) -> dict[str, float]:
    r"""Per-parameter multipliers of a function-preserving rescaling of a ReLU network.

    In every ``nn.Sequential`` of the model, each maximal chain of affine layers (``Linear``,
    ``ConvNd``) joined only by positively homogeneous modules (ReLU, max/avg pooling, flatten) is
    rescaled: layer $l$ of a chain of $L$ gets cumulative scale $c_l = $ ``factor``$^{l}$ for
    $l < L$ and $c_L = 1$, i.e. weight $\times c_l/c_{l-1}$ and bias $\times c_l$.

    Args:
        model: the network.
        factor: $c > 0$, $\ne 1$.

    Returns:
        ``{parameter name: multiplier}`` for the rescaled parameters.

    Raises:
        UserError: if ``factor`` is not positive or no chain of two affine layers is found.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> relu_rescaling(net, 2.0)
        {'0.weight': 2.0, '0.bias': 2.0, '2.weight': 0.5}
    """
    if not factor > 0 or factor == 1.0:
        raise UserError(f"factor must be positive and different from 1, got {factor}")
    scales: dict[str, float] = {}
    for prefix, module in model.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        chain: list[str] = []

        def flush(chain: list[str], module: nn.Module = module, prefix: str = prefix) -> None:
            if len(chain) < 2:
                return
            prev = 1.0
            for i, name in enumerate(chain):
                cur = factor ** (i + 1) if i < len(chain) - 1 else 1.0
                layer = module.get_submodule(name)
                base = f"{prefix}.{name}" if prefix else name
                scales[f"{base}.weight"] = cur / prev
                if getattr(layer, "bias", None) is not None:
                    scales[f"{base}.bias"] = cur
                prev = cur

        for name, child in module.named_children():
            if isinstance(child, _AFFINE):
                chain.append(name)
            elif isinstance(child, _HOMOGENEOUS):
                continue
            else:
                flush(chain)
                chain = []
        flush(chain)
    scales = {k: v for k, v in scales.items() if v != 1.0}
    if not scales:
        raise UserError(
            "no rescalable ReLU chain found (two Linear/Conv layers joined by ReLU/pooling "
            "inside an nn.Sequential); pass scales explicitly"
        )
    return scales


@dataclass(frozen=True)
class ReparametrizationCheck:
    r"""Curvature terms before and after a function-preserving rescaling.

    Attributes:
        scales: the multipliers applied (parameter name -> factor).
        invariant: ``{name: (before, after)}`` for ``shift_curvature``
            ($\frac12 s^\top\tilde Hs$), ``bias_curvature`` ($\frac12 b^\top Hb$) and
            ``covariance_curvature`` ($\frac12\mathrm{tr}(H\Sigma)$).
        variant: ``{name: (before, after)}`` for ``trace`` (Hutchinson, same probes) and
            ``lambda_max`` of the train Hessian $H$.
        trace_stderr: Hutchinson standard errors of the trace before and after.
        output_change: largest change of the model's outputs on the eval data under the rescaling
            (0 up to rounding for a valid reparametrization).
    """

    scales: dict[str, float]
    invariant: dict[str, tuple[float, float]]
    variant: dict[str, tuple[float, float]]
    trace_stderr: tuple[float, float]
    output_change: float

    def max_invariant_relative_change(self) -> float:
        r"""Largest $|\text{after} - \text{before}| / |\text{before}|$ of the invariant terms."""
        return max(abs(a - b) / max(abs(b), 1e-300) for b, a in self.invariant.values())


def _diag(loss: ModelLoss, scales: dict[str, float]) -> Tensor:
    unknown = set(scales) - set(loss.names)
    if unknown:
        raise UserError(f"scales name unknown or frozen parameters: {sorted(unknown)}")
    parts = [
        torch.full((n,), float(scales.get(name, 1.0)), dtype=loss.dtype, device=loss.device)
        for name, n in zip(loss.names, loss.numels)
    ]
    return torch.cat(parts)


def reparametrization_check(
    model: nn.Module,
    loss_fn: LossFn,
    train: Any,
    eval_data: Any,
    shift: ShiftResult,
    *,
    scales: dict[str, float] | None = None,
    bias: Tensor | None = None,
    covariance_samples: Tensor | None = None,
    num_probes: int = 32,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
) -> ReparametrizationCheck:
    r"""Recompute curvature terms on a rescaled copy of the parameters and compare.

    Args:
        model: the network at $\theta^*$ (never modified).
        loss_fn: the loss used for ``shift``.
        train: training data (for $H = \nabla^2 L(\theta^*)$).
        eval_data: evaluation data (for $\tilde H = \nabla^2\tilde L(\tilde\theta^*)$).
        shift: a result of :func:`~sgdtemp.shift.measure_shift` for this model and data.
        scales: parameter multipliers (default :func:`relu_rescaling` with factor 2).
        bias: a bias vector $b$ ``(d,)`` (default: a random displacement of norm $\|s\|$).
        covariance_samples: $Z$ ``(d, m)`` with $\Sigma = ZZ^\top/m$ (default: 4 random
            displacements of norm $\|s\|$). Both transform like displacements: $b' = Db$.
        num_probes: Rademacher probes for Hutchinson's $\mathrm{tr}H$ (the same probes before and
            after, a paired comparison).
        batch_size: split ``(x, y)`` tensors into batches of this size.
        generator: randomness of the default $b$, $Z$, the probes and Lanczos.

    Returns:
        The check; invariant terms should agree to rounding, variant ones should not.

    Raises:
        UserError: on unknown parameter names or a rescaling that changes the model's outputs.
    """
    train_loss = ModelLoss(model, loss_fn, train, batch_size=batch_size)
    eval_loss = ModelLoss(model, loss_fn, eval_data, batch_size=batch_size)
    scales = relu_rescaling(model) if scales is None else dict(scales)
    dvec = _diag(train_loss, scales)
    theta = train_loss.flat_params()
    theta_eval = shift.eval_minimum.to(theta)
    s = shift.shift.to(theta)
    d = theta.numel()
    norm = float(torch.linalg.vector_norm(s)) or 1.0
    generator = default_generator(generator, theta.device)
    gdev = generator.device

    def displacement(m: int) -> Tensor:
        z = torch.randn(d, m, generator=generator, device=gdev, dtype=theta.dtype).to(theta)
        return z * (norm / torch.linalg.vector_norm(z, dim=0, keepdim=True))

    b = displacement(1)[:, 0] if bias is None else bias.to(theta)
    z = displacement(4) if covariance_samples is None else covariance_samples.to(theta)
    probes = torch.randint(0, 2, (d, num_probes), generator=generator, device=gdev)
    probes = (probes.to(theta.dtype) * 2 - 1).to(theta.device)

    # the rescaling must not change the function
    x0 = eval_loss.batches[0][0]
    with eval_mode(model), torch.no_grad():
        out = torch.func.functional_call(model, eval_loss.unflatten(theta), (x0,))
        out2 = torch.func.functional_call(model, eval_loss.unflatten(dvec * theta), (x0,))
    change = float((out - out2).abs().max())
    tol = 1e3 * torch.finfo(theta.dtype).eps * max(float(out.abs().max()), 1.0)
    if change > tol:
        raise UserError(
            f"the rescaling changes the model's outputs by {change:.3g}; it is not a "
            "reparametrization of this model (only ReLU chains can be rescaled)"
        )

    def terms(scale: Tensor) -> dict[str, Any]:
        h_train = HessianOperator.at(train_loss, scale * theta)
        h_eval = HessianOperator.at(eval_loss, scale * theta_eval)
        s_, b_, z_ = scale * s, scale * b, scale[:, None] * z
        samples = quadratic_forms(h_train, probes)  # Hutchinson, the same probes each time
        trace = (float(samples.mean()), float(samples.std()) / num_probes**0.5)
        lam = top_eigenvalues(h_train, 1, tol=1e-6, generator=generator).values[0]
        return {
            "shift_curvature": 0.5 * float(s_ @ (h_eval @ s_)),
            "bias_curvature": 0.5 * float(b_ @ (h_train @ b_)),
            "covariance_curvature": 0.5 * float(quadratic_forms(h_train, z_).sum()) / z_.shape[1],
            "trace": trace,
            "lambda_max": float(lam),
        }

    before = terms(torch.ones_like(dvec))
    after = terms(dvec)
    names = ("shift_curvature", "bias_curvature", "covariance_curvature")
    return ReparametrizationCheck(
        scales=scales,
        invariant={k: (before[k], after[k]) for k in names},
        variant={
            "trace": (before["trace"][0], after["trace"][0]),
            "lambda_max": (before["lambda_max"], after["lambda_max"]),
        },
        trace_stderr=(before["trace"][1], after["trace"][1]),
        output_change=change,
    )
