r"""The train→test shift of a minimum, measured on a real model.

From a trained model at $\theta^*$ (a minimum of the train objective $F$), descend on an
evaluation set's objective $\tilde F$ to the nearby minimum $\tilde\theta^*$ and report the shift
$s = \theta^* - \tilde\theta^*$ with the quantities of theory.md §1.2 and §3.3:

$$\underbrace{\tilde F(\theta^*) - F(\theta^*)}_{\text{generalization gap}}
 = \underbrace{\tilde F(\tilde\theta^*) - F(\theta^*)}_{\text{vertical shift}}
 + \underbrace{\tilde F(\theta^*) - \tilde F(\tilde\theta^*)}_{\text{measured gap}}, \qquad
 \text{measured gap} \approx
 \underbrace{\tfrac12 s^\top \nabla^2\tilde F(\tilde\theta^*)\, s}_{\text{shift-curvature}} .$$

The first identity is exact; the ratio measured gap / shift-curvature tests the quadratic picture
(it tends to 1 as $\|s\| \to 0$).

**Which objective.** Cross-entropy on data a network can separate has no finite minimum, so
$\tilde\theta^*$ of the bare eval loss may not exist or may lie far outside the quadratic region
around $\theta^*$ (theory.md §5). Two honest options, reported in :attr:`ShiftResult.objective`:

- ``"minimum"``: $\tilde F = \tilde L + \frac{\lambda}2\|\theta\|^2$ with the *same* weight decay
  $\lambda$ as training ($F = L + \frac\lambda2\|\theta\|^2$); for $\lambda > 0$ a minimum exists.
- ``"proximal"``: $\tilde F = \tilde L + \frac\lambda2\|\theta\|^2 + \frac\mu2\|\theta-\theta^*\|^2$
  for a reported $\mu > 0$: the shift SGD's pull toward $\theta^*$ would allow, always finite.

``objective="auto"`` picks ``"minimum"`` when ``weight_decay > 0`` and ``"proximal"`` otherwise.
The train objective $F$ never has the proximal term. In both cases the local Newton shift
$s_N = \nabla^2\tilde F(\theta^*)^{-1}\nabla\tilde F(\theta^*)$ (by CG; for the proximal objective
$(\tilde H + (\lambda+\mu) I)^{-1}\nabla\tilde F(\theta^*)$) is reported beside the descended one.

**Names.** :attr:`ShiftResult.shift_curvature` is always
$\tfrac12 s^\top\nabla^2\tilde F(\tilde\theta^*)s$ with $\tilde F = \tilde L +
\frac\lambda2\|\theta\|^2$ (theory.md §1.7: the term that makes the decomposition exact), never
the proximal term; beside it :attr:`~ShiftResult.data_shift_curvature`
$\tfrac12 s^\top\nabla^2\tilde L s$ (the paper's, without regularizers), the weight-decay share
$\frac\lambda2\|s\|^2$ and, for the proximal objective, the measurement's own share
$\frac\mu2\|s\|^2$. Options live in one frozen :class:`ShiftOptions`, shared by
``sgdtemp shift``, the sweeps and Python callers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from sgdtemp.curvature import (
    HessianOperator,
    ModelLoss,
    conjugate_gradient,
    top_eigenvalues,
)
from sgdtemp.curvature._base import default_generator
from sgdtemp.curvature._model import HVP_MODES, LossFn
from sgdtemp.errors import UserError
from sgdtemp.shift._descent import Objective as _Objective
from sgdtemp.shift._descent import descend
from sgdtemp.shift._solvers import SOLVERS

__all__ = ["ShiftOptions", "ShiftResult", "ShiftProjection", "measure_shift", "OBJECTIVES"]

OBJECTIVES = ("auto", "minimum", "proximal")
SMOOTHINGS = ("auto", "off")
_DEFAULT_MU_FRACTION = 1e-2  # proximal mu = this times lambda_max of the eval Hessian at theta*


@dataclass(frozen=True)
class ShiftProjection:
    r"""The shift on the top eigenvectors of the eval data Hessian.

    $\tilde H = \nabla^2\tilde L(\tilde\theta^*)$ (without regularizers).

    Attributes:
        eigenvalues: top-$k$ eigenvalues of $\tilde H$, descending, ``(k,)``.
        coefficients: $u_i^\top s$, ``(k,)``.
        norm_fraction: $\sum_i (u_i^\top s)^2 / \|s\|^2$, the share of the shift in that subspace.
        curvature_fraction: $\sum_i \lambda_i (u_i^\top s)^2 / s^\top\tilde H s$, the share of the
            data shift-curvature it carries.
    """

    eigenvalues: Tensor
    coefficients: Tensor
    norm_fraction: float
    curvature_fraction: float


@dataclass(frozen=True)
class ShiftResult:
    r"""The measured shift $s = \theta^* - \tilde\theta^*$ and its decomposition.

    Attributes:
        method: the descent (``"newton_cg"`` or ``"lbfgs"``).
        objective: ``"minimum"`` or ``"proximal"`` (see the module docstring).
        weight_decay: $\lambda$ in both objectives.
        mu: proximal weight $\mu$ (0 for ``"minimum"``).
        shift: $s$, ``(d,)``.
        eval_minimum: $\tilde\theta^*$, ``(d,)``.
        shift_norm: $\|s\|$.
        train_objective: $F(\theta^*)$.
        eval_objective_at_train_min: $\tilde F(\theta^*)$.
        eval_objective_at_eval_min: $\tilde F(\tilde\theta^*)$ (no proximal term).
        measured_gap: the drop of the descended objective,
            $\tilde F_\mu(\theta^*) - \tilde F_\mu(\tilde\theta^*)$ with
            $\tilde F_\mu = \tilde F + \frac\mu2\|\theta-\theta^*\|^2$ ($\mu = 0$ for
            ``"minimum"``).
        shift_curvature: $\frac12 s^\top\nabla^2\tilde F(\tilde\theta^*)s$, $\tilde F = \tilde L
            + \frac\lambda2\|\theta\|^2$: data part plus weight-decay share, no proximal term.
        data_shift_curvature: $\frac12 s^\top\nabla^2\tilde L(\tilde\theta^*)s$ (no regularizers;
            one HVP).
        weight_decay_curvature: $\frac\lambda2\|s\|^2$, the weight-decay share of
            ``shift_curvature``.
        proximal_curvature: $\frac\mu2\|s\|^2$, the proximal term's share of the descended
            objective's curvature (0 for ``"minimum"``): an artefact of the measurement.
        quadratic_gap: $\frac12 s^\top\nabla^2\tilde F_\mu s$ = ``shift_curvature +
            proximal_curvature``, the quadratic model of ``measured_gap``.
        ratio: ``measured_gap / quadratic_gap`` (1 where the quadratic picture holds).
        vertical_shift: $\tilde F(\tilde\theta^*) - F(\theta^*)$ (no proximal term).
        generalization_gap: $\tilde L(\theta^*) - L(\theta^*)$, exactly ``vertical_shift +
            measured_gap + proximal_curvature``.
        grad_norm_at_eval_min: $\|\nabla\tilde F(\tilde\theta^*)\|$.
        initial_grad_norm: $\|\nabla\tilde F(\theta^*)\|$.
        train_grad_norm: $\|\nabla F(\theta^*)\|$ (how much of a train minimum $\theta^*$ is).
        converged: whether the descent met its gradient criterion.
        iterations: descent iterations.
        num_hvps: Hessian-vector products spent by the descent.
        message: why the descent stopped.
        newton_shift_norm: $\|s_N\|$ of the local Newton shift.
        newton_cosine: cosine between $s$ and $s_N$.
        newton_converged: whether the CG solve for $s_N$ converged (no negative curvature).
        projection: the shift on the top eigenvectors of $\tilde H$, or None when ``top_k=0``.
        smoothing_beta: the last sharpness of the smoothing continuation, or None when the
            descent ran on the network as it is (:attr:`ShiftOptions.smoothing`).
        nonsmooth_grad_norm: $\|\nabla\tilde F_\mu\|$ of the unsmoothed objective at
            $\tilde\theta^*$ (with smoothing, ``grad_norm_at_eval_min`` is the last stage's,
            the one the tolerance is tested on; this one stays at the size of the gradient's
            jumps across ReLU kinks).
    """

    method: str
    objective: str
    weight_decay: float
    mu: float
    shift: Tensor = field(repr=False)
    eval_minimum: Tensor = field(repr=False)
    shift_norm: float
    train_objective: float
    eval_objective_at_train_min: float
    eval_objective_at_eval_min: float
    measured_gap: float
    shift_curvature: float
    data_shift_curvature: float
    weight_decay_curvature: float
    proximal_curvature: float
    quadratic_gap: float
    ratio: float
    vertical_shift: float
    generalization_gap: float
    grad_norm_at_eval_min: float
    initial_grad_norm: float
    train_grad_norm: float
    converged: bool
    iterations: int
    num_hvps: int
    message: str
    newton_shift_norm: float
    newton_cosine: float
    newton_converged: bool
    projection: ShiftProjection | None = None
    smoothing_beta: float | None = None
    nonsmooth_grad_norm: float = math.nan

    def summary(self) -> dict[str, Any]:
        """The scalar fields as a plain dict (no tensors), projection included as lists."""
        out: dict[str, Any] = {
            k: getattr(self, k)
            for k in self.__dataclass_fields__
            if k not in ("shift", "eval_minimum", "projection")
        }
        if self.projection is not None:
            out["projection"] = {
                "eigenvalues": self.projection.eigenvalues.tolist(),
                "coefficients": self.projection.coefficients.tolist(),
                "norm_fraction": self.projection.norm_fraction,
                "curvature_fraction": self.projection.curvature_fraction,
            }
        return out


@dataclass(frozen=True)
class ShiftOptions:
    r"""How to measure a shift (:func:`measure_shift`): the objectives and the descent.

    Attributes:
        weight_decay: $\lambda$, the L2 coefficient used in training; both objectives carry it.
        objective: ``"auto"``, ``"minimum"`` or ``"proximal"`` (module docstring).
        mu: proximal weight; default $10^{-2}\lambda_{\max}(\nabla^2\tilde L(\theta^*))$.
        method: ``"newton_cg"`` (trust-region Newton–CG) or ``"lbfgs"``.
        batch_size: split ``(x, y)`` tensors into batches of this size (None: one batch).
        grad_tol: absolute gradient-norm tolerance of the descent.
        rel_grad_tol: gradient-norm tolerance relative to $\|\nabla\tilde F(\theta^*)\|$.
        max_iters: descent iterations.
        max_cg_iters: CG iterations per Newton step and for the Newton shift.
        max_seconds: wall-time budget of the descent (it then stops unconverged with
            ``message="time limit"``; everything is still reported at the point reached).
        top_k: project $s$ on this many top eigenvectors of $\tilde H$ (0: skip).
        hvp_mode: Hessian-vector-product formulation (see
            :class:`~sgdtemp.curvature.HessianOperator`; the default gives the same digits on
            every machine).
        smoothing: ``"auto"``: when the model's forward calls ReLU or max pooling, descend by
            smoothing continuation (softplus of growing sharpness, :mod:`sgdtemp.shift._smoothing`;
            the objective of a ReLU network has kinks where no gradient vanishes); ``"off"``:
            descend on the network as it is.
        smoothing_betas: the increasing sharpnesses $\beta$ of the continuation's stages (in
            units of the inverse pre-activation); ``max_iters`` and ``max_seconds`` apply to all
            stages together.

    Raises:
        UserError: on an unknown choice or a number out of range (at construction).

    Example:
        >>> ShiftOptions(weight_decay=1e-3, max_iters=20).objective
        'auto'
        >>> ShiftOptions(grad_tol=float("nan"))
        Traceback (most recent call last):
        ...
        sgdtemp.errors.UserError: shift grad_tol must be a number >= 0 (finite), got nan
    """

    weight_decay: float = 0.0
    objective: str = "auto"
    mu: float | None = None
    method: str = "newton_cg"
    batch_size: int | None = None
    grad_tol: float = 1e-6
    rel_grad_tol: float = 1e-4
    max_iters: int = 100
    max_cg_iters: int = 50
    max_seconds: float = math.inf
    top_k: int = 0
    hvp_mode: str = "double_backward"
    smoothing: str = "auto"
    smoothing_betas: tuple[float, ...] = (10.0, 30.0, 100.0, 300.0, 1e3)

    def __post_init__(self) -> None:
        def positive(name: str, value: Any, *, zero: bool = False, finite: bool = True) -> None:
            ok = isinstance(value, int | float) and not math.isnan(value)
            ok = ok and (value >= 0 if zero else value > 0)
            if not ok or (finite and not math.isfinite(value)):
                kind = ("number >= 0" if zero else "positive number") + (
                    " (finite)" if finite else ""
                )
                raise UserError(f"shift {name} must be a {kind}, got {value}")

        if self.objective not in OBJECTIVES:
            raise UserError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.method not in SOLVERS:
            raise UserError(f"method must be one of {tuple(SOLVERS)}, got {self.method!r}")
        if self.hvp_mode not in ("auto", *HVP_MODES):
            raise UserError(f"hvp_mode must be 'auto' or one of {HVP_MODES}, got {self.hvp_mode!r}")
        wd = self.weight_decay
        if not (isinstance(wd, int | float) and wd >= 0 and math.isfinite(wd)):
            raise UserError(f"weight_decay must be a finite number >= 0, got {wd}")
        if self.mu is not None:
            positive("mu", self.mu)
        positive("grad_tol", self.grad_tol, zero=True)
        positive("rel_grad_tol", self.rel_grad_tol, zero=True)
        positive("max_seconds", self.max_seconds, zero=True, finite=False)
        for name, least in (("max_iters", 1), ("max_cg_iters", 1), ("top_k", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise UserError(f"shift {name} must be an integer >= {least}, got {value!r}")
        if self.smoothing not in SMOOTHINGS:
            raise UserError(f"smoothing must be one of {SMOOTHINGS}, got {self.smoothing!r}")
        betas = self.smoothing_betas
        if not (
            isinstance(betas, tuple | list)
            and betas
            and all(isinstance(b, int | float) and 0 < b < math.inf for b in betas)
            and all(x < y for x, y in zip(betas[:-1], betas[1:]))
        ):
            raise UserError(f"smoothing_betas must be increasing positive numbers, got {betas!r}")
        object.__setattr__(self, "smoothing_betas", tuple(float(b) for b in betas))
        if self.batch_size is not None and (
            not isinstance(self.batch_size, int) or self.batch_size < 1
        ):
            raise UserError(f"shift batch_size must be a positive integer, got {self.batch_size!r}")

    @property
    def resolved_objective(self) -> str:
        """``objective`` with ``"auto"`` resolved: ``"minimum"`` when ``weight_decay > 0``."""
        if self.objective != "auto":
            return self.objective
        return "minimum" if self.weight_decay > 0 else "proximal"


def measure_shift(
    model: nn.Module,
    loss_fn: LossFn,
    train: Any,
    eval_data: Any,
    options: ShiftOptions | None = None,
    *,
    generator: torch.Generator | None = None,
    callback: Callable[[int, float, float], None] | None = None,
    **fields: Any,
) -> ShiftResult:
    r"""Measure the shift from the train minimum $\theta^*$ (the weights) to the eval minimum.

    Args:
        model: the trained network; its weights are $\theta^*$ (never modified).
        loss_fn: ``loss_fn(output, target) -> scalar`` averaging over its batch.
        train: training data, ``(x, y)`` tensors or an iterable of batches (for $F(\theta^*)$).
        eval_data: evaluation data (held-out, test or corrupted), same forms.
        options: the objectives and the descent (default :class:`ShiftOptions`).
        generator: randomness of the Lanczos start vectors (default: seeded with
            :data:`~sgdtemp.curvature.DEFAULT_SEED`).
        callback: called after each descent iteration with (iteration, objective, gradient
            norm), e.g. for a progress display.
        **fields: fields of :class:`ShiftOptions` overriding ``options``, for a quick call
            (``measure_shift(model, loss, train, test, weight_decay=1e-3)``).

    Returns:
        The shift and its decomposition; check ``converged`` and ``ratio``.

    Raises:
        UserError: on unknown options, empty data or ``top_k`` out of range.

    Example:
        >>> import torch
        >>> from sgdtemp.shift import measure_shift
        >>> gen = torch.Generator().manual_seed(0)
        >>> model = torch.nn.Linear(3, 1).double()
        >>> x = torch.randn(64, 3, generator=gen, dtype=torch.float64)
        >>> y = x @ torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64)
        >>> options = ShiftOptions(weight_decay=0.01, rel_grad_tol=1e-12)
        >>> res = measure_shift(model, torch.nn.MSELoss(), (x, y), (x + 0.1, y), options)
        >>> res.objective, res.converged, round(res.ratio, 6)  # quadratic loss: ratio exactly 1
        ('minimum', True, 1.0)
    """
    o = dataclasses.replace(options or ShiftOptions(), **fields)
    kind = o.resolved_objective
    weight_decay, mu = o.weight_decay, o.mu
    train_loss = ModelLoss(model, loss_fn, train, batch_size=o.batch_size, hvp_mode=o.hvp_mode)
    eval_loss = ModelLoss(model, loss_fn, eval_data, batch_size=o.batch_size, hvp_mode=o.hvp_mode)
    if o.top_k > eval_loss.dim:
        raise UserError(
            f"top_k must be between 0 and the number of parameters ({eval_loss.dim}), got {o.top_k}"
        )
    generator = default_generator(generator, eval_loss.device)
    theta_star = eval_loss.flat_params()
    if kind == "proximal" and mu is None:
        lam = top_eigenvalues(
            HessianOperator.at(eval_loss, theta_star), 1, tol=1e-2, generator=generator
        ).values[0]
        mu = _DEFAULT_MU_FRACTION * max(float(lam), 0.0)
        if mu <= 0:
            raise UserError("the eval Hessian has no positive curvature; pass mu explicitly")
    mu_value = float(mu) if kind == "proximal" and mu is not None else 0.0
    train_obj = _Objective(train_loss, weight_decay, 0.0, theta_star)
    eval_obj = _Objective(eval_loss, weight_decay, mu_value, theta_star)

    train_value, train_grad = train_obj.value_and_grad(theta_star)
    start_value, start_grad = eval_obj.value_and_grad(theta_star)
    descent = descend(
        model,
        loss_fn,
        eval_loss,
        eval_data,
        weight_decay,
        mu_value,
        theta_star,
        theta_star,
        o,
        callback,
    )
    result = descent.result
    theta_eval = result.x
    s = theta_star - theta_eval
    data_hs = eval_loss.hvp(theta_eval, s.unsqueeze(0))[0]
    data_curv = 0.5 * float((s.double() * data_hs.double()).sum())
    s2 = float((s.double() ** 2).sum())
    wd_curv, prox_curv = 0.5 * weight_decay * s2, 0.5 * mu_value * s2
    quadratic = data_curv + wd_curv + prox_curv
    gap = start_value - result.value
    eval_at_eval_min = result.value - prox_curv  # F~ without the proximal term
    # local Newton shift from theta*: (Hessian of the eval objective at theta*)^-1 grad
    newton = conjugate_gradient(
        eval_obj.hessian(theta_star), start_grad, tol=1e-6, max_iters=o.max_cg_iters
    )
    s_newton = newton.x
    denom = float(torch.linalg.vector_norm(s)) * float(torch.linalg.vector_norm(s_newton))
    cosine = float(s @ s_newton) / denom if denom > 0 else math.nan
    projection = None
    if o.top_k > 0:
        pairs = top_eigenvalues(
            HessianOperator.at(eval_loss, theta_eval), o.top_k, generator=generator
        )
        coef = pairs.vectors.T @ s
        projection = ShiftProjection(
            eigenvalues=pairs.values,
            coefficients=coef,
            norm_fraction=float((coef.double() ** 2).sum()) / s2 if s2 > 0 else math.nan,
            curvature_fraction=(
                0.5 * float((pairs.values.double() * coef.double() ** 2).sum()) / data_curv
                if data_curv != 0
                else math.nan
            ),
        )
    return ShiftResult(
        method=o.method,
        objective=kind,
        weight_decay=float(weight_decay),
        mu=mu_value,
        shift=s,
        eval_minimum=theta_eval,
        shift_norm=float(torch.linalg.vector_norm(s)),
        train_objective=train_value,
        eval_objective_at_train_min=start_value,
        eval_objective_at_eval_min=eval_at_eval_min,
        measured_gap=gap,
        shift_curvature=data_curv + wd_curv,
        data_shift_curvature=data_curv,
        weight_decay_curvature=wd_curv,
        proximal_curvature=prox_curv,
        quadratic_gap=quadratic,
        ratio=gap / quadratic if quadratic != 0 else math.nan,
        vertical_shift=eval_at_eval_min - train_value,
        generalization_gap=start_value - train_value,
        grad_norm_at_eval_min=result.grad_norm,
        initial_grad_norm=float(torch.linalg.vector_norm(start_grad)),
        train_grad_norm=float(torch.linalg.vector_norm(train_grad)),
        converged=result.converged,
        iterations=result.iterations,
        num_hvps=result.num_hvps,
        message=result.message,
        newton_shift_norm=float(torch.linalg.vector_norm(s_newton)),
        newton_cosine=cosine,
        newton_converged=newton.all_converged,
        projection=projection,
        smoothing_beta=descent.smoothing_beta,
        nonsmooth_grad_norm=descent.nonsmooth_grad_norm,
    )
