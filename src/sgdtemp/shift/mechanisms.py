r"""The three curvature mechanisms of the expected eval loss, measured on a real network.

From a stationary run's mean $\bar\theta$ and a uniform sample of its iterates $\theta_j$
(theory.md §1.7), with weight decay $\lambda > 0$ so that minima exist:

- $\theta^*$: the minimum of the train objective $F = L + \frac\lambda2\|\theta\|^2$ reached by
  descent from $\bar\theta$; per eval set, $\tilde\theta^*$: the minimum of
  $\tilde F = \tilde L + \frac\lambda2\|\theta\|^2$ reached from $\theta^*$, and
  $\tilde H = \nabla^2\tilde F(\tilde\theta^*)$ (it includes $\lambda I$);
- $s = \theta^* - \tilde\theta^*$, $b = \bar\theta - \theta^*$, $\delta_j = \theta_j - \bar\theta$.

Since $\theta_j - \tilde\theta^* = \delta_j + b + s$ and $\nabla\tilde F(\tilde\theta^*) = 0$,
averaging the quadratic expansion of $\tilde F$ over $j$ gives

$$\overline{\tilde F(\theta_j)} - F(\theta^*) \approx
\underbrace{\tilde F(\tilde\theta^*) - F(\theta^*)}_{\text{vertical}}
+ \underbrace{\tfrac12 s^\top\tilde Hs}_{\text{shift-curvature}}
+ \underbrace{s^\top\tilde Hb}_{\text{cross}}
+ \underbrace{\tfrac12 b^\top\tilde Hb}_{\text{bias-curvature}}
+ \underbrace{\tfrac12\overline{\delta_j^\top\tilde H\delta_j}}_{\text{covariance-curvature}}
+ \underbrace{\bar\delta^\top\tilde H(s+b)}_{\text{sampling term}},$$

exactly when $\tilde F$ is quadratic. The sampling term vanishes when $\bar\theta$ is the mean of
the sampled iterates themselves ($\bar\delta = 0$); for a reservoir drawn from a longer run it is
zero in expectation and reported on its own, outside the sum of the five named terms. Everything
is a Hessian-vector product or a quadratic form (:func:`sgdtemp.curvature.quadratic_forms`): no
dense covariance. The covariance-curvature and the measured left side carry standard errors from
the spread over the sample ($\mathrm{sd}/\sqrt k$: the iterates of a reservoir are drawn at random
times from a long window, so they are nearly independent when $k$ is much smaller than the
window's effective sample count). The descents are those of :func:`sgdtemp.shift.measure_shift`
(:class:`~sgdtemp.shift.ShiftOptions`, the ``"minimum"`` objective; for a ReLU network a smoothing
continuation, whose minima are Clarke-stationary points of the kinked objective, while values and
Hessians are those of the network as it is); a descent that did not reach its gradient tolerance
is flagged with its reason, and its terms should not be used.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from sgdtemp.curvature import HessianOperator, ModelLoss, quadratic_forms
from sgdtemp.curvature._model import LossFn
from sgdtemp.errors import UserError
from sgdtemp.shift._descent import descend
from sgdtemp.shift.measure import ShiftOptions

__all__ = ["EvalMechanisms", "MechanismsResult", "measure_mechanisms", "TERMS"]

#: The five named terms of the decomposition, in the order of theory.md §1.7.
TERMS = ("vertical", "shift_curvature", "cross", "bias_curvature", "covariance_curvature")


@dataclass(frozen=True)
class EvalMechanisms:
    r"""The decomposition of $\overline{\tilde F(\theta_j)} - F(\theta^*)$ for one eval set.

    Attributes:
        eval_set: its name.
        eval_minimum: $\tilde\theta^*$, ``(d,)``.
        shift: $s = \theta^* - \tilde\theta^*$, ``(d,)``.
        shift_norm: $\|s\|$.
        vertical: $\tilde F(\tilde\theta^*) - F(\theta^*)$.
        shift_curvature: $\frac12 s^\top\tilde Hs$.
        cross: $s^\top\tilde Hb$.
        bias_curvature: $\frac12 b^\top\tilde Hb$.
        covariance_curvature: $\frac12\overline{\delta_j^\top\tilde H\delta_j}$.
        covariance_curvature_se: its standard error over the sample.
        sampling_term: $\bar\delta^\top\tilde H(s+b)$ (0 when $\bar\theta$ is the sample mean).
        total: the sum of the five named terms.
        measured: $\overline{\tilde F(\theta_j)} - F(\theta^*)$.
        measured_se: its standard error over the sample.
        remainder: ``measured - total - sampling_term``: cubic and higher orders (0 for a
            quadratic $\tilde F$, up to rounding).
        eval_objective_at_eval_min: $\tilde F(\tilde\theta^*)$.
        eval_loss_at_eval_min: $\tilde L(\tilde\theta^*)$ (data loss).
        eval_loss_at_train_min: $\tilde L(\theta^*)$.
        eval_loss_at_mean: $\tilde L(\bar\theta)$.
        eval_loss_mean: $\overline{\tilde L(\theta_j)}$, the expectation of the data loss.
        eval_loss_mean_se: its standard error.
        weight_decay_shares: the $\lambda$ parts of the curvature terms (``shift_curvature``
            $\frac\lambda2\|s\|^2$, ``cross`` $\lambda s^\top b$, ``bias_curvature``
            $\frac\lambda2\|b\|^2$, ``covariance_curvature``
            $\frac\lambda2\overline{\|\delta_j\|^2}$).
        converged: whether the descent to $\tilde\theta^*$ met its gradient tolerance.
        iterations: its iterations.
        num_hvps: its Hessian-vector products.
        message: why it stopped.
        grad_norm: $\|\nabla\tilde F(\tilde\theta^*)\|$ (with smoothing: of the last stage's
            smoothed objective, the norm the tolerance is tested on).
        initial_grad_norm: $\|\nabla\tilde F(\theta^*)\|$.
        smoothing_beta: the last sharpness of the smoothing continuation (None: no smoothing).
        nonsmooth_grad_norm: $\|\nabla\tilde F(\tilde\theta^*)\|$ of the network as it is.
    """

    eval_set: str
    eval_minimum: Tensor = field(repr=False)
    shift: Tensor = field(repr=False)
    shift_norm: float
    vertical: float
    shift_curvature: float
    cross: float
    bias_curvature: float
    covariance_curvature: float
    covariance_curvature_se: float
    sampling_term: float
    total: float
    measured: float
    measured_se: float
    remainder: float
    eval_objective_at_eval_min: float
    eval_loss_at_eval_min: float
    eval_loss_at_train_min: float
    eval_loss_at_mean: float
    eval_loss_mean: float
    eval_loss_mean_se: float
    weight_decay_shares: dict[str, float]
    converged: bool
    iterations: int
    num_hvps: int
    message: str
    grad_norm: float
    initial_grad_norm: float
    smoothing_beta: float | None
    nonsmooth_grad_norm: float

    def summary(self) -> dict[str, Any]:
        """The scalars as a plain dict (``"sum"`` is ``total``), no tensors."""
        out = {
            k: getattr(self, k)
            for k in self.__dataclass_fields__
            if k not in ("eval_minimum", "shift", "weight_decay_shares")
        }
        out["sum"] = self.total
        out["weight_decay_shares"] = dict(self.weight_decay_shares)
        return out


@dataclass(frozen=True)
class MechanismsResult:
    r"""The train minimum, the bias and the decomposition per eval set.

    Attributes:
        method: the descent (``"newton_cg"`` or ``"lbfgs"``).
        weight_decay: $\lambda$.
        n_iterates: $k$, the sampled iterates.
        train_minimum: $\theta^*$, ``(d,)``.
        bias: $b = \bar\theta - \theta^*$, ``(d,)``.
        bias_norm: $\|b\|$.
        spread: $\sqrt{\overline{\|\delta_j\|^2}}$, the rms distance of the iterates from
            $\bar\theta$.
        train_objective: $F(\theta^*)$.
        train_loss: $L(\theta^*)$ (data loss).
        train_loss_at_mean: $L(\bar\theta)$.
        train_objective_mean: $\overline{F(\theta_j)}$.
        train_loss_mean: $\overline{L(\theta_j)}$.
        train_loss_mean_se: its standard error.
        converged: whether the descent to $\theta^*$ met its gradient tolerance.
        iterations: its iterations.
        num_hvps: its Hessian-vector products.
        message: why it stopped.
        grad_norm: $\|\nabla F(\theta^*)\|$ (with smoothing: the last stage's).
        initial_grad_norm: $\|\nabla F(\bar\theta)\|$.
        smoothing_beta: the last sharpness of the train descent's continuation (None: none).
        nonsmooth_grad_norm: $\|\nabla F(\theta^*)\|$ of the network as it is.
        evals: the decomposition per eval set, in the order given.
    """

    method: str
    weight_decay: float
    n_iterates: int
    train_minimum: Tensor = field(repr=False)
    bias: Tensor = field(repr=False)
    bias_norm: float
    spread: float
    train_objective: float
    train_loss: float
    train_loss_at_mean: float
    train_objective_mean: float
    train_loss_mean: float
    train_loss_mean_se: float
    converged: bool
    iterations: int
    num_hvps: int
    message: str
    grad_norm: float
    initial_grad_norm: float
    smoothing_beta: float | None
    nonsmooth_grad_norm: float
    evals: dict[str, EvalMechanisms]

    @property
    def all_converged(self) -> bool:
        """Whether every descent (train and each eval set) met its tolerance."""
        return self.converged and all(e.converged for e in self.evals.values())

    def summary(self) -> dict[str, Any]:
        """The scalars as a plain dict, eval sets under ``"evals"``."""
        out = {
            k: getattr(self, k)
            for k in self.__dataclass_fields__
            if k not in ("train_minimum", "bias", "evals")
        }
        out["all_converged"] = self.all_converged
        out["evals"] = {name: e.summary() for name, e in self.evals.items()}
        return out


def _mean_se(values: Tensor) -> tuple[float, float]:
    """Mean and standard error of a ``(k,)`` sample (se nan for k = 1)."""
    v = values.double()
    k = v.numel()
    se = float(v.std(unbiased=True)) / math.sqrt(k) if k > 1 else math.nan
    return float(v.mean()), se


def measure_mechanisms(
    model: nn.Module,
    loss_fn: LossFn,
    train: Any,
    eval_data: Mapping[str, Any],
    mean: Tensor,
    iterates: Tensor,
    options: ShiftOptions | None = None,
    *,
    callback: Callable[[str, int, float, float], None] | None = None,
    **fields: Any,
) -> MechanismsResult:
    r"""Measure the decomposition of theory.md §1.7 from a stationary run's mean and iterates.

    Args:
        model: the network (its architecture; its own weights are never read or modified).
        loss_fn: ``loss_fn(output, target) -> scalar`` averaging over its batch.
        train: training data, ``(x, y)`` tensors or an iterable of batches (for $F$).
        eval_data: ``{name: data}`` of eval sets (held-out, test, corrupted), same forms.
        mean: $\bar\theta$, the run's mean over its stationary window, ``(d,)`` (float64 is
            fine: it is cast to the model's dtype).
        iterates: the sampled iterates $\theta_j$, ``(k, d)``.
        options: the descents (:class:`~sgdtemp.shift.ShiftOptions` with ``weight_decay > 0``;
            ``objective`` must be ``"auto"`` or ``"minimum"``).
        callback: called after each descent iteration with (``"train"`` or the eval set's name,
            iteration, objective, gradient norm).
        **fields: fields of :class:`~sgdtemp.shift.ShiftOptions` overriding ``options``.

    Returns:
        The train minimum, the bias and per eval set the five terms, their sum and the measured
        expectation; check :attr:`MechanismsResult.all_converged`.

    Raises:
        UserError: without weight decay, with a proximal objective, with no eval set or on
            shapes that do not match the model.

    Example:
        >>> import torch
        >>> gen = torch.Generator().manual_seed(0)
        >>> model = torch.nn.Linear(3, 1).double()
        >>> x = torch.randn(64, 3, generator=gen, dtype=torch.float64)
        >>> y = x @ torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64)
        >>> iterates = torch.randn(16, 4, generator=gen, dtype=torch.float64) * 0.1
        >>> options = ShiftOptions(weight_decay=0.01, rel_grad_tol=1e-12)
        >>> res = measure_mechanisms(model, torch.nn.MSELoss(), (x, y), {"test": (x + 0.1, y)},
        ...                          iterates.mean(0), iterates, options)
        >>> m = res.evals["test"]
        >>> res.all_converged, abs(m.measured - m.total) < 1e-9  # quadratic: the sum is exact
        (True, True)
    """
    o = dataclasses.replace(options or ShiftOptions(), **fields)
    if not o.weight_decay > 0:
        raise UserError(
            "the mechanisms need minima of F and F~: pass weight_decay > 0 (the run's L2 "
            "coefficient)"
        )
    if o.resolved_objective != "minimum":
        raise UserError("the mechanisms use the 'minimum' objective; drop objective='proximal'")
    if not eval_data:
        raise UserError("pass at least one eval set")
    lam = float(o.weight_decay)
    train_loss = ModelLoss(model, loss_fn, train, batch_size=o.batch_size, hvp_mode=o.hvp_mode)
    d = train_loss.dim
    if mean.shape != (d,) or iterates.ndim != 2 or iterates.shape[1] != d or len(iterates) < 1:
        raise UserError(
            f"mean must be ({d},) and iterates (k, {d}) with k >= 1 for this model, got "
            f"{tuple(mean.shape)} and {tuple(iterates.shape)}"
        )
    dtype, device = train_loss.dtype, train_loss.device
    mean64 = mean.detach().to(device=device, dtype=torch.float64)
    thetas64 = iterates.detach().to(device=device, dtype=torch.float64)
    deltas64 = thetas64 - mean64  # (k, d)
    delta_bar = deltas64.mean(dim=0)
    sq = (deltas64**2).sum(dim=1)  # |delta_j|^2
    thetas = thetas64.to(dtype)

    def reg(theta: Tensor) -> float:
        return 0.5 * lam * float((theta.double() ** 2).sum())

    def tracked(name: str) -> Any:
        if callback is None:
            return None
        return lambda it, value, gnorm: callback(name, it, value, gnorm)

    start = mean64.to(dtype)
    train_descent = descend(
        model, loss_fn, train_loss, train, lam, 0.0, start, start, o, tracked("train")
    )
    found = train_descent.result
    theta_star = found.x
    train_value = found.value
    bias64 = mean64 - theta_star.double()
    train_losses = torch.tensor([train_loss.loss(t) for t in thetas], dtype=torch.float64)
    train_loss_mean, train_loss_se = _mean_se(train_losses)
    regs = torch.tensor([reg(t) for t in thetas64], dtype=torch.float64)

    evals: dict[str, EvalMechanisms] = {}
    for name, data in eval_data.items():
        eval_loss = ModelLoss(model, loss_fn, data, batch_size=o.batch_size, hvp_mode=o.hvp_mode)
        eval_descent = descend(
            model, loss_fn, eval_loss, data, lam, 0.0, theta_star, theta_star, o, tracked(name)
        )
        res = eval_descent.result
        theta_eval = res.x
        s64 = theta_star.double() - theta_eval.double()
        # H~ = data Hessian at theta~* plus lambda I: two products for s and b, forms for delta_j
        sb = torch.stack([s64, bias64]).to(dtype)
        h_sb = eval_loss.hvp(theta_eval, sb).double() + lam * sb.double()  # (2, d)
        shift_curv = 0.5 * float(s64 @ h_sb[0])
        cross = float(bias64 @ h_sb[0])
        bias_curv = 0.5 * float(bias64 @ h_sb[1])
        op = HessianOperator.at(eval_loss, theta_eval)
        forms = quadratic_forms(op, deltas64.to(dtype).T).double() + lam * sq  # (k,)
        cov_curv, cov_se = _mean_se(0.5 * forms)
        sampling = float(delta_bar @ (h_sb[0] + h_sb[1]))
        eval_losses = torch.tensor([eval_loss.loss(t) for t in thetas], dtype=torch.float64)
        measured, measured_se = _mean_se(eval_losses + regs - train_value)
        loss_mean, loss_se = _mean_se(eval_losses)
        vertical = res.value - train_value
        total = vertical + shift_curv + cross + bias_curv + cov_curv
        evals[name] = EvalMechanisms(
            eval_set=name,
            eval_minimum=theta_eval,
            shift=s64.to(dtype),
            shift_norm=float(torch.linalg.vector_norm(s64)),
            vertical=vertical,
            shift_curvature=shift_curv,
            cross=cross,
            bias_curvature=bias_curv,
            covariance_curvature=cov_curv,
            covariance_curvature_se=cov_se,
            sampling_term=sampling,
            total=total,
            measured=measured,
            measured_se=measured_se,
            remainder=measured - total - sampling,
            eval_objective_at_eval_min=res.value,
            eval_loss_at_eval_min=res.value - reg(theta_eval),
            eval_loss_at_train_min=eval_loss.loss(theta_star),
            eval_loss_at_mean=eval_loss.loss(start),
            eval_loss_mean=loss_mean,
            eval_loss_mean_se=loss_se,
            weight_decay_shares={
                "shift_curvature": 0.5 * lam * float(s64 @ s64),
                "cross": lam * float(s64 @ bias64),
                "bias_curvature": 0.5 * lam * float(bias64 @ bias64),
                "covariance_curvature": 0.5 * lam * float(sq.mean()),
            },
            converged=res.converged,
            iterations=res.iterations,
            num_hvps=res.num_hvps,
            message=res.message,
            grad_norm=res.grad_norm,
            initial_grad_norm=res.initial_grad_norm,
            smoothing_beta=eval_descent.smoothing_beta,
            nonsmooth_grad_norm=eval_descent.nonsmooth_grad_norm,
        )
    return MechanismsResult(
        method=o.method,
        weight_decay=lam,
        n_iterates=int(thetas.shape[0]),
        train_minimum=theta_star,
        bias=bias64.to(dtype),
        bias_norm=float(torch.linalg.vector_norm(bias64)),
        spread=math.sqrt(float(sq.mean())),
        train_objective=train_value,
        train_loss=train_value - reg(theta_star),
        train_loss_at_mean=train_loss.loss(start),
        train_objective_mean=float((train_losses + regs).mean()),
        train_loss_mean=train_loss_mean,
        train_loss_mean_se=train_loss_se,
        converged=found.converged,
        iterations=found.iterations,
        num_hvps=found.num_hvps,
        message=found.message,
        grad_norm=found.grad_norm,
        initial_grad_norm=found.initial_grad_norm,
        smoothing_beta=train_descent.smoothing_beta,
        nonsmooth_grad_norm=train_descent.nonsmooth_grad_norm,
        evals=evals,
    )
